/**
 * The token and list grammar shared by every header this plugin reads (RFC 7230 §3.2.6, §7).
 *
 *   token = 1*tchar
 *   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
 *   #element => [ element ] *( OWS "," OWS [ element ] )
 *
 * One list scanner serves Connection, Upgrade (hasToken) and Sec-WebSocket-Protocol (parseProtocols): it walks
 * the value once, left to right, and reports each non-empty element by its bounds, without building strings or
 * arrays; callers apply their own caps (header length, element count). Sec-WebSocket-Extensions has parameters
 * and quoted strings; its parser (extension-header.ts) keeps its own scanner and takes only tchar from here.
 */

const TCHAR = new Uint8Array(128)
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1
for (const ch of "!#$%&'*+-.^_`|~") TCHAR[ch.charCodeAt(0)] = 1

/** True if the UTF-16 code unit `c` is an RFC 7230 tchar. */
export function isTchar (c: number): boolean {
  return c < 128 && TCHAR[c] === 1
}

/** True if `s` is a non-empty RFC 7230 token. */
export function isToken (s: string): boolean {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    if (!isTchar(s.charCodeAt(i))) return false
  }
  return true
}

/**
 * The code units String.prototype.trim removes (ECMAScript WhiteSpace and LineTerminator). Elements are trimmed
 * of these, not only of OWS (SP, HTAB), so that a list reads exactly as splitting on commas and calling trim()
 * reads it, which is how these headers have always been read here.
 */
function isTrimmed (c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d)
  if (c < 0xa0) return false
  return c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 ||
    c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff
}

/** A position in a comma-separated header value; after nextElement() returns true, `start`/`end` bound the element. */
export interface ListCursor {
  readonly value: string
  /** Where the scan resumes (past the end once the last element was read). */
  pos: number
  /** First code unit of the current element (trimmed). */
  start: number
  /** One past its last code unit. */
  end: number
}

export function listCursor (value: string): ListCursor {
  return { value, pos: 0, start: 0, end: 0 }
}

/**
 * Advance to the next non-empty element, with surrounding whitespace trimmed; false when none is left.
 * Empty elements (`a,,b`, a trailing comma) are skipped (RFC 7230 §7). Each code unit is read at most twice over
 * a whole scan, so a header costs linear time whatever its shape.
 */
export function nextElement (cursor: ListCursor): boolean {
  const value = cursor.value
  const n = value.length
  let i = cursor.pos
  while (i < n) {
    let comma = value.indexOf(',', i)
    if (comma === -1) comma = n
    let start = i
    let end = comma
    while (start < end && isTrimmed(value.charCodeAt(start))) start++
    while (end > start && isTrimmed(value.charCodeAt(end - 1))) end--
    i = comma + 1
    if (start < end) {
      cursor.pos = i
      cursor.start = start
      cursor.end = end
      return true
    }
  }
  cursor.pos = n
  return false
}

/** The current element as a string. */
export function elementText (cursor: ListCursor): string {
  return cursor.value.slice(cursor.start, cursor.end)
}

/**
 * Whether the list `value` has an element equal to `element`, a token (no comma, no whitespace). The match is
 * exact: fold case before calling for a case-insensitive one. A value that is the element alone, the usual case,
 * is answered without a scan.
 */
export function listIncludes (value: string, element: string): boolean {
  if (value === element) return element !== ''
  const cursor = listCursor(value)
  while (nextElement(cursor)) {
    // Compare lengths first: most elements differ in length, and then no string is built.
    if (cursor.end - cursor.start === element.length && elementText(cursor) === element) return true
  }
  return false
}
