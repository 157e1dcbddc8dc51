/**
 * tnet as a library, for test code in privileged CI runners: `import { Controller } from 'tnet'`.
 * The same core the daemon and the Docker plugin run, in-process, with a state directory of its
 * own. A library instance's host-wide names carry its scope (`tn-SCOPE-NAME` namespaces, the
 * `tnet-SCOPE` nft table), so it runs next to the host's daemon without touching it.
 *
 *   const tnet = await Controller.open({ stateDir: mkdtempSync('/tmp/ci-') });
 *   await tnet.createNetwork({ name: 'web', subnet: '10.9.0.0/24' });
 *   const a = await tnet.createSandbox({ name: 'a' });   // a.netns: the namespace's path
 *   await tnet.connect('web', 'a');
 *
 * Labs for tests: `createLab(fileOrObject)` builds a lab in namespaces of its own that die with
 * the test process (kill -9 included); see libnetwork/lab/library.ts.
 *
 *   await using lab = await createLab('examples/line.yml');
 *   const { code, stdout } = await lab.exec('r1', 'ping -c1 10.0.23.2');
 */
export {
  Controller, type ControllerEvents, type ControllerOptions, type ConnectRequest, type EndpointRequest, type NetworkRequest,
  type SubnetRequest,
} from './libnetwork/controller.js';
export type {
  AddressSource, DriverType, Endpoint, IpConfig, Lifecycle, Network, Owner, PortMapping, PortRequest, Proto, Sandbox, SandboxKind,
} from './libnetwork/model.js';
export { TnetError, isTnetError, type ErrorCode } from './libnetwork/errors.js';
export { IpAddr, Subnet } from './libnetwork/ipam/index.js';
export type {
  Attachment, Driver, DriverContext, DriverFactory, DriverOptions, DriverStore, JoinTarget, StaticRoute, Tags,
} from './libnetwork/driverapi.js';
export { builtinDrivers, DEFAULT_DRIVER } from './drivers/index.js';
export { networkView, endpointView, sandboxView } from './libnetwork/views.js';
export { startDnsService, type DnsService, type DnsServiceOptions } from './dns/index.js';
export { startPlugin, type PluginHandle, type PluginOptions } from './libnetwork/plugin/index.js';
// Labs for test code: the lab lives in namespaces owned by a worker process and dies with the caller.
export { createLab, type CreateLabOptions, type ExecOptions, type ExecResult, type Lab } from './libnetwork/lab/library.js';
export type { LabLinkSpec, LabNetworkSpec, LabNodeSpec, LabPools, LabSpec } from './libnetwork/lab/topology.js';
export type { LabApplyResult, LabDetails, LabSummary } from './libnetwork/lab/apply.js';
