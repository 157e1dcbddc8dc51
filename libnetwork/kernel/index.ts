/**
 * The only code that talks to the kernel. Typed kinds and one verb per kernel operation;
 * no netlink Buffer leaves this folder.
 */
export * from './error.js';
export * from './inet.js';
export * from './netns.js';
export * from './rtnl.js';
export * from './ifname.js';
export * from './link.js';
export * from './addr.js';
export * from './route.js';
export * from './neigh.js';
export * from './nft.js';
export * from './sysctl.js';
export * from './socket.js';
export * from './xfrm.js';
