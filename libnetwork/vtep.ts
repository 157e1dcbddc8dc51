/**
 * This host's tunnel endpoint (VTEP): the underlay address the other hosts send its overlay
 * traffic to. Chosen as flannel does: `--advertise-addr IP` as given, `--advertise-addr IFNAME`
 * for that interface's address, and by default the source address the kernel picks for the route
 * towards the first store endpoint (the address the other hosts, which reach the same store,
 * most likely reach this one at).
 */
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { invalid } from './errors.js';
import { IpAddr } from './ipam/address.js';
import { type Rtnl, addrList, linkByName } from './kernel/index.js';

/** The VTEP from `--advertise-addr` (IP or interface name), or from the route towards `storeHost` ("host:port"). */
export async function resolveVtep(rtnl: Rtnl, advertise: string | undefined, storeHost: string): Promise<IpAddr> {
  if (advertise !== undefined && advertise !== '') {
    if (isIP(advertise)) {
      const a = IpAddr.parse(advertise);
      if (!(await addrList(rtnl)).some((x) => x.address === a.toString()))
        throw invalid(`--advertise-addr ${a}: no interface of this host has that address; other hosts would send its overlay traffic nowhere`, 'advertise-addr');
      return a;
    }
    const link = await linkByName(rtnl, advertise);
    if (!link) throw invalid(`--advertise-addr ${advertise}: neither an IP address nor an interface of this host`, 'advertise-addr');
    const addrs = (await addrList(rtnl)).filter((x) => x.ifindex === link.index && !x.address.startsWith('fe80:'));
    const pick = addrs.find((x) => x.family === 4) ?? addrs[0];
    if (!pick) throw invalid(`--advertise-addr ${advertise}: the interface has no address to advertise`, 'advertise-addr');
    return IpAddr.parse(pick.address);
  }
  return sourceTowards(storeHost);
}

/** The source address the kernel picks towards `hostPort`: a connected UDP socket, nothing sent. */
async function sourceTowards(hostPort: string): Promise<IpAddr> {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort);
  const host = m?.[1] ?? hostPort;
  const port = Number(m?.[2] ?? 2379);
  let ip: string;
  let family: 4 | 6;
  try {
    const r = await lookup(host);
    ip = r.address;
    family = r.family === 6 ? 6 : 4;
  } catch (e) {
    throw invalid(`cannot resolve the store host "${host}" to choose this host's VTEP: ${(e as Error).message}; give --advertise-addr`, 'advertise-addr');
  }
  const sock = createSocket(family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(port, ip, () => resolve());
    });
    const src = sock.address().address;
    if (src === '127.0.0.1' || src === '::1') {
      throw invalid(`the store is reached over loopback (${ip}), which no other host can send to; give this host's underlay address with --advertise-addr`, 'advertise-addr');
    }
    return IpAddr.parse(src);
  } catch (e) {
    if ((e as { code?: string }).code === 'invalid-argument') throw e;
    throw invalid(`no route towards the store at ${hostPort} to choose this host's VTEP (${(e as Error).message}); give --advertise-addr`, 'advertise-addr');
  } finally {
    sock.close();
  }
}
