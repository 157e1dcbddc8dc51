import { describe, expect, it } from 'vitest';
import { DRIVER_MTU, VXLANID_LIST } from '../../libnetwork/netlabel.js';
import { ENCRYPTED, bridgeName, hostVethName, overlayConfig, vxlanName } from '../../drivers/overlay/options.js';
import { overlayDriver } from '../../drivers/overlay/overlay.js';
import { expandOptions } from '../../libnetwork/driverapi.js';

describe('overlay options', () => {
  it('takes Docker keys and the short forms', () => {
    const opts = expandOptions(overlayDriver, { vni: '5000', mtu: '1400' });
    expect(opts).toEqual({ [VXLANID_LIST]: '5000', [DRIVER_MTU]: '1400' });
    expect(overlayConfig(opts)).toEqual({ vni: 5000, mtu: 1400, encrypted: false, dns: undefined, ignored: [] });
  });

  it('defaults: the cluster picks the VNI, the underlay gives the MTU', () => {
    expect(overlayConfig({})).toEqual({ vni: undefined, mtu: undefined, encrypted: false, dns: undefined, ignored: [] });
    expect(overlayConfig({ [DRIVER_MTU]: '0' }).mtu).toBeUndefined();
  });

  it('takes `-o encrypted` with any value but an explicit false, as Docker does', () => {
    expect(overlayConfig({ [ENCRYPTED]: '' }).encrypted).toBe(true);
    expect(overlayConfig({ [ENCRYPTED]: 'true' }).encrypted).toBe(true);
    expect(overlayConfig({ [ENCRYPTED]: 'false' }).encrypted).toBe(false);
  });

  it.each([
    [{ [VXLANID_LIST]: '100' }, /4096-16777215/],
    [{ [VXLANID_LIST]: '16777216' }, /4096-16777215/],
    [{ [VXLANID_LIST]: 'abc' }, /not a VNI/],
    [{ [VXLANID_LIST]: '5000,5001' }, /one VNI/],
    [{ [DRIVER_MTU]: '900' }, /1280/],
    [{ [DRIVER_MTU]: 'big' }, /whole number/],
  ])('refuses %o with a reason', (opts, why) => {
    expect(() => overlayConfig(opts)).toThrow(why);
  });

  it('lists unknown keys as ignored', () => {
    expect(overlayConfig({ zzz: '1', aaa: '2' }).ignored).toEqual(['aaa', 'zzz']);
  });

  it('names fit IFNAMSIZ and never meet the other drivers\' names', () => {
    const id = 'ab'.repeat(32);
    for (const n of [bridgeName(id), vxlanName(16777215), hostVethName(id)]) expect(n.length).toBeLessThanOrEqual(15);
    expect(vxlanName(4096)).toBe('tvx-1000');
    expect(bridgeName(id)).toMatch(/^tov-/);
    expect(hostVethName(id)).toMatch(/^tno[0-9a-f]{12}$/);
  });
});
