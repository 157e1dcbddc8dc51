/**
 * Every option key in one place. Docker's keys are what `docker network create -o` sends and
 * what Docker users already know. Each driver lists the keys it knows and its short forms
 * (`DriverFactory.options`) for people typing `tnet network create`.
 */
export const BRIDGE_NAME = 'com.docker.network.bridge.name';
export const ENABLE_ICC = 'com.docker.network.bridge.enable_icc';
export const ENABLE_IP_MASQUERADE = 'com.docker.network.bridge.enable_ip_masquerade';
export const HOST_BINDING_IPV4 = 'com.docker.network.bridge.host_binding_ipv4';
export const DRIVER_MTU = 'com.docker.network.driver.mtu';
export const INTERNAL = 'com.docker.network.internal';
export const ENABLE_IPV6 = 'com.docker.network.enable_ipv6';
export const GENERIC = 'com.docker.network.generic';
export const EXPOSED_PORTS = 'com.docker.network.endpoint.exposedports';
export const PORT_MAP = 'com.docker.network.portmap';
export const MAC_ADDRESS = 'com.docker.network.endpoint.macaddress';
/** libnetwork's generic key for the name prefix of the interface inside the container (eth -> eth0, eth1...). */
export const CONTAINER_IFACE_PREFIX = 'com.docker.network.container_iface_prefix';
/** Docker's bridge keys that tnet accepts (their values checked) and does not act on. */
export const INHIBIT_IPV4 = 'com.docker.network.bridge.inhibit_ipv4';
export const DEFAULT_BRIDGE = 'com.docker.network.bridge.default_bridge';
/**
 * Docker's overlay key for the VNIs of a network (swarm's manager hands each node the list). A
 * global network's mirror carries the VNI the cluster gave it here, so every host's driver uses
 * the same one.
 */
export const VXLANID_LIST = 'com.docker.network.driver.overlay.vxlanid_list';
/** The tnet overlay a Docker network stands for: `--ipam-opt tnet.network=NAME` (plugin/overlay.ts). */
export const TNET_NETWORK = 'tnet.network';
/** Where every host serves a global network's DNS (its mirror carries the cluster's choice; ipam/global.ts). */
export const DNS_ADDRESS = 'tnet.dns_address';
