// The message schemas of the `json` scenario, shared by every server that takes part in it, so each validates
// (or, for the unvalidated baseline, merely parses) the same inbound shape and replies with the same outbound one.
//
// In:  {"type":"say","room":"lobby","text":"hello world","n":123}
// Out: {"type":"said","text":"hello world","n":123}

/** What a client sends (JSON Schema, draft 7 as ajv 8 reads it by default). */
export const SayMessage = {
  type: 'object',
  properties: {
    type: { const: 'say' },
    room: { type: 'string', minLength: 1, maxLength: 32 },
    text: { type: 'string', maxLength: 500 },
    n: { type: 'integer', minimum: 0 }
  },
  required: ['type', 'room', 'text', 'n'],
  additionalProperties: false
}

/** What the server answers. */
export const SaidMessage = {
  type: 'object',
  properties: {
    type: { type: 'string' },
    text: { type: 'string' },
    n: { type: 'integer' }
  },
  required: ['type', 'text', 'n'],
  additionalProperties: false
}

/**
 * The ajv options Fastify 5 uses for request bodies (@fastify/ajv-compiler's defaults, less its URI resolver, which
 * these schemas do not need), for the servers that compile the schema by hand: the same validation work as the
 * plugin's route schema, which goes through the Fastify instance's own ajv.
 */
export const FASTIFY_AJV_OPTIONS = { coerceTypes: 'array', useDefaults: true, removeAdditional: true, addUsedSchema: false, allErrors: false }
