import * as dnsPacket from 'dns-packet';

/** dns-packet's decode result with the fields its typings leave out or optional. */
export interface Msg extends dnsPacket.DecodedPacket {
  id: number;
  rcode: string;
  opcode: string;
  questions: dnsPacket.Question[];
  answers: (dnsPacket.Answer & { data?: unknown; ttl?: number })[];
  authorities: (dnsPacket.Answer & { data?: unknown; ttl?: number })[];
  additionals: dnsPacket.Answer[];
}

export const decode = (b: Buffer): Msg => dnsPacket.decode(b) as Msg;
