/**
 * The built-in drivers. The core names none of them: a controller is handed this list (or another)
 * and resolves `-d TYPE` through its registry.
 */
import type { DriverFactory } from '../libnetwork/driverapi.js';
import { bridgeDriver } from './bridge/bridge.js';
import { macvlanDriver } from './macvlan/macvlan.js';
import { overlayDriver } from './overlay/overlay.js';

export const builtinDrivers: readonly DriverFactory[] = [bridgeDriver, macvlanDriver, overlayDriver];

/** The driver of a network created without `-d`, as with Docker. */
export const DEFAULT_DRIVER = bridgeDriver.type;
