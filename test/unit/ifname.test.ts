import { describe, expect, it } from 'vitest';
import { ifnameProblem } from '../../libnetwork/kernel/ifname.js';

describe('ifnameProblem: the one checker for every name tnet hands the kernel', () => {
  it.each([
    ['', /is empty/],
    ['br%d', /may not contain "%"/],
    ['%', /may not contain "%"/],
    ['a%sb', /may not contain "%"/],
    ['.', /may not be "\." or "\.\."/],
    ['..', /may not be "\." or "\.\."/],
    ['a/b', /may not contain "\/"/],
    ['a:b', /":"/],
    ['a b', /white space/],
    ['a\tb', /white space/],
    ['abcdefghijklmnop', /is 16 bytes long; the kernel allows at most 15/],
    ['éééééééé', /is 16 bytes long/], // bytes, not characters
  ])('refuses %j', (name, why) => {
    expect(ifnameProblem(name)).toMatch(why);
  });
  it.each(['eth0', 'tn-0123456789ab', 'abcdefghijklmno', 'br-lab.1', 'x_y'])('accepts %j', (name) => {
    expect(ifnameProblem(name)).toBeUndefined();
  });
});
