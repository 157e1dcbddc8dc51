/**
 * The wire format of Docker's remote NetworkDriver and IpamDriver calls, as JSON schemas: these
 * are the documentation (../shared/reference/docker-plugin.md, recorded from dockerd 20.10).
 * Field names are Go's, PascalCase. Extra fields are allowed (a newer dockerd may add some);
 * wrong types are refused, never coerced.
 */
const dockerId = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;
const str = { type: 'string', maxLength: 4096 } as const;
const optionsMap = { type: ['object', 'null'] } as const;
const strMap = { type: ['object', 'null'], additionalProperties: { type: 'string', maxLength: 4096 } } as const;

const ipamData = {
  type: 'object',
  required: ['Pool'],
  properties: {
    AddressSpace: str,
    Pool: str,
    Gateway: str,
    AuxAddresses: strMap,
  },
} as const;

const networkRef = { type: 'object', required: ['NetworkID'], properties: { NetworkID: dockerId } } as const;
const endpointRef = {
  type: 'object',
  required: ['NetworkID', 'EndpointID'],
  properties: { NetworkID: dockerId, EndpointID: dockerId },
} as const;

export const network = {
  CreateNetwork: {
    type: 'object',
    required: ['NetworkID'],
    properties: {
      NetworkID: dockerId,
      Options: optionsMap,
      IPv4Data: { type: ['array', 'null'], maxItems: 16, items: ipamData },
      IPv6Data: { type: ['array', 'null'], maxItems: 16, items: ipamData },
    },
  },
  DeleteNetwork: networkRef,
  CreateEndpoint: {
    type: 'object',
    required: ['NetworkID', 'EndpointID'],
    properties: {
      NetworkID: dockerId,
      EndpointID: dockerId,
      Interface: {
        type: ['object', 'null'],
        properties: { Address: str, AddressIPv6: str, MacAddress: str },
      },
      Options: optionsMap,
    },
  },
  EndpointOperInfo: endpointRef,
  DeleteEndpoint: endpointRef,
  Join: {
    type: 'object',
    required: ['NetworkID', 'EndpointID', 'SandboxKey'],
    properties: { NetworkID: dockerId, EndpointID: dockerId, SandboxKey: { type: 'string', minLength: 1, maxLength: 4096 }, Options: optionsMap },
  },
  Leave: endpointRef,
  ProgramExternalConnectivity: {
    type: 'object',
    required: ['NetworkID', 'EndpointID'],
    properties: { NetworkID: dockerId, EndpointID: dockerId, Options: optionsMap },
  },
  RevokeExternalConnectivity: endpointRef,
  DiscoverNew: {
    type: 'object',
    properties: { DiscoveryType: { type: 'integer' }, DiscoveryData: {} },
  },
  DiscoverDelete: {
    type: 'object',
    properties: { DiscoveryType: { type: 'integer' }, DiscoveryData: {} },
  },
} as const;

export const ipam = {
  RequestPool: {
    type: 'object',
    properties: {
      AddressSpace: str,
      Pool: str,
      SubPool: str,
      Options: strMap,
      V6: { type: 'boolean' },
    },
  },
  ReleasePool: { type: 'object', required: ['PoolID'], properties: { PoolID: { type: 'string', minLength: 1, maxLength: 256 } } },
  RequestAddress: {
    type: 'object',
    required: ['PoolID'],
    properties: { PoolID: { type: 'string', minLength: 1, maxLength: 256 }, Address: str, Options: strMap },
  },
  ReleaseAddress: {
    type: 'object',
    required: ['PoolID', 'Address'],
    properties: { PoolID: { type: 'string', minLength: 1, maxLength: 256 }, Address: { type: 'string', minLength: 1, maxLength: 64 } },
  },
} as const;
