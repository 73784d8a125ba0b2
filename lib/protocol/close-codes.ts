/** Close codes (RFC 6455 §7.4 and the IANA registry). */

/** A code a peer may put in a Close frame: 1000-1003, 1007-1014, 3000-4999. */
export function isValidReceivedCloseCode (code: number): boolean {
  return (code >= 1000 && code <= 1003) ||
    (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999)
}

/** A code the application may send with close(): the same set (1005 and 1006 are never sent). */
export const isValidSendCloseCode = isValidReceivedCloseCode
