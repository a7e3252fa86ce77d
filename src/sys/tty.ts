// Serial terminal control through ioctl: modem lines (carrier), baud rate, and redirecting /dev/console.
import { closeSync, constants, openSync } from "node:fs";
import { ioctl } from "./libc";

const TCGETS = 0x5401, TCSETS = 0x5402, TIOCMGET = 0x5415, TIOCCONS = 0x541d;
export const TIOCM_CAR = 0x040;
const CBAUD = 0o010017, CLOCAL = 0o004000;
const BAUD_BITS: Record<number, number> = {
  1200: 0o11, 2400: 0o13, 4800: 0o14, 9600: 0o15, 19200: 0o16, 38400: 0o17,
  57600: 0o010001, 115200: 0o010002, 230400: 0o010003, 460800: 0o010004, 921600: 0o010007,
};
/** Kernel struct termios (asm-generic): 4 u32 flags, c_line, c_cc[19]. */
const TERMIOS_SIZE = 36;

export function supportedBaud(baud: number): boolean {
  return baud in BAUD_BITS;
}

/** Opens a tty without making it our controlling terminal and without waiting for carrier. */
export function openTty(path: string): number {
  return openSync(path, constants.O_RDWR | constants.O_NOCTTY | constants.O_NONBLOCK);
}

/** Modem status bits (TIOCM_*) of an open tty; throws when the port has no UART behind it. */
export function modemLines(fd: number, what: string): number {
  const v = new Int32Array(1);
  ioctl(fd, TIOCMGET, v, what);
  return v[0];
}

/** Sets the line speed and CLOCAL (ignore modem control) keeping the rest of the kernel's defaults. */
export function setBaud(fd: number, baud: number, what: string): void {
  const bits = BAUD_BITS[baud];
  if (bits === undefined) throw new Error(`${what}: unsupported baud rate ${baud}`);
  const t = new Uint8Array(TERMIOS_SIZE);
  ioctl(fd, TCGETS, t, what);
  const dv = new DataView(t.buffer);
  const cflag = dv.getUint32(8, true);
  dv.setUint32(8, ((cflag & ~CBAUD) | bits | CLOCAL) >>> 0, true);
  ioctl(fd, TCSETS, t, what);
}

/** TIOCCONS: writes to /dev/console (our stdout as PID 1) go to this tty from now on. */
export function redirectConsole(fd: number, what: string): void {
  ioctl(fd, TIOCCONS, null, what);
}

export function closeTty(fd: number): void {
  try { closeSync(fd); } catch {}
}
