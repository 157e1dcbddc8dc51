/**
 * The control API's doctor routes (`tnet doctor`): what differs between the store and the kernel,
 * and the repair. Strict like the other routes: no body on the check, an empty object on the repair.
 */
import type { FastifyInstance } from 'fastify';
import type { Controller } from '../controller.js';

const finding = {
  type: 'object',
  additionalProperties: false,
  required: ['problem', 'object', 'detail'],
  properties: {
    problem: { enum: ['missing', 'stray', 'duplicate', 'interrupted', 'wrong'] },
    object: { type: 'string' },
    record: { type: 'string' },
    detail: { type: 'string' },
  },
} as const;
const findings = { type: 'array', items: finding } as const;

export function registerDoctorRoutes(app: FastifyInstance, ctl: () => Promise<Controller>): void {
  app.get('/doctor', { schema: { response: { 200: { type: 'object', additionalProperties: false, required: ['findings'], properties: { findings } } } } }, async () => ({
    findings: await (await ctl()).diagnose(),
  }));
  app.post(
    '/doctor/repair',
    {
      schema: {
        body: { type: 'object', additionalProperties: false, properties: {} },
        response: { 200: { type: 'object', additionalProperties: false, required: ['found', 'left'], properties: { found: findings, left: findings } } },
      },
    },
    async () => (await ctl()).repair(),
  );
}
