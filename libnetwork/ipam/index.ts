/** tnet IPAM: address pools and allocation. The controller and the Docker IpamDriver face use this. */
export { type Family, IpAddr } from './address.js';
export { Subnet } from './subnet.js';
export {
  DEFAULT_V4_POOLS,
  type PoolSpec,
  V6_POOL_SIZE,
  defaultV6Pools,
  ulaPrefix,
} from './defaults.js';
export { type Allocator, LocalAllocator } from './allocator.js';
export {
  type AddressDomain,
  type AddressKind,
  type Allocation,
  DEFAULT_ADDRESS_SPACE,
  addressDomain,
  Ipam,
  type IpamOptions,
  type Pool,
  type PoolRequest,
  migrations,
} from './ipam.js';
export { checkUsableSubnet, tooSmallReason, unusableAddressReason, unusableReason } from './usable.js';
