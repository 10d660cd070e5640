// RFC 3339 date-times, compared as epoch milliseconds. Strings are stored as the caller wrote them.

// Full date, "T", time, optional fraction, mandatory offset (Z or ±hh:mm).
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-](\d{2}):(\d{2}))$/i;

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Epoch milliseconds of a valid RFC 3339 date-time, or undefined (also for 2025-02-30, 24:00, leap seconds). */
export function parseDateTime(value: string): number | undefined {
  if (value.length > 40) return undefined;
  const m = RFC3339.exec(value);
  if (m === null) return undefined;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as [
    number, number, number, number, number, number,
  ];
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  if (m[9] !== undefined && (Number(m[9]) > 23 || Number(m[10]) > 59)) return undefined;
  const ms = Date.parse(value.toUpperCase());
  return Number.isNaN(ms) ? undefined : ms;
}

/** Epoch milliseconds of a date-time the domain already validated; throws on a broken invariant. */
export function toMillis(value: string): number {
  const ms = parseDateTime(value);
  if (ms === undefined) throw new RangeError(`not an RFC 3339 date-time: ${JSON.stringify(value)}`);
  return ms;
}

export function isBefore(a: string, b: string): boolean {
  return toMillis(a) < toMillis(b);
}
