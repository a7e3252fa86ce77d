// Console autodetection: `console=` wins, else the ACPI SPCR table, else the one serial port with carrier.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { consoleFromCmdline, type Cmdline } from "./cmdline";
import { parseSpcr } from "./spcr";
import { closeTty, modemLines, openTty, redirectConsole, setBaud, supportedBaud, TIOCM_CAR } from "../sys/tty";

export interface ConsoleChoice {
  tty: string;  // "ttyS0"
  baud: number;
  source: "cmdline" | "spcr" | "carrier" | "only-port";
}

export interface PortProbe {
  tty: string;
  exists: boolean;  // a UART answers (TIOCMGET works)
  carrier: boolean; // DCD asserted
}

export interface ConsoleDecision {
  /** undefined: leave the kernel's console alone (console= named a non-serial device, or nothing was found). */
  choice?: ConsoleChoice;
  /** Why each source was or was not used, for the debug log. */
  notes: string[];
}

const DEFAULT_BAUD = 115200;

/**
 * Pure decision from the inputs: the kernel command line, the SPCR table bytes (or null) and the probed ports.
 * `console=` means the kernel already writes there: nothing to configure unless it is a serial port we can name.
 */
export function chooseConsole(cmdline: Cmdline, spcr: Uint8Array | null, ports: PortProbe[]): ConsoleDecision {
  const notes: string[] = [];
  const c = consoleFromCmdline(cmdline);
  if (c) {
    if (/^ttyS\d+$/.test(c.name)) return { choice: { tty: c.name, baud: c.baud ?? 9600, source: "cmdline" }, notes };
    notes.push(`console=${c.name} on the kernel command line: not a serial port, left as is`);
    return { notes };
  }
  if (spcr) {
    const r = parseSpcr(spcr);
    if (r.ok) return { choice: { tty: r.tty, baud: r.baud, source: "spcr" }, notes };
    notes.push(`ACPI SPCR ignored: ${r.reason}`);
  } else notes.push("no ACPI SPCR table");
  const existing = ports.filter((p) => p.exists);
  const withCarrier = existing.filter((p) => p.carrier);
  if (withCarrier.length === 1) return { choice: { tty: withCarrier[0].tty, baud: DEFAULT_BAUD, source: "carrier" }, notes };
  if (existing.length === 1) return { choice: { tty: existing[0].tty, baud: DEFAULT_BAUD, source: "only-port" }, notes };
  notes.push(`serial ports: ${existing.length} present, ${withCarrier.length} with carrier: no unique choice`);
  return { notes };
}

/** Probes /dev/ttyS* for a UART and carrier. Ports without hardware fail to open or to answer TIOCMGET. */
export function probePorts(devDir = "/dev", max = 32): PortProbe[] {
  let names: string[] = [];
  try { names = readdirSync(devDir).filter((n) => /^ttyS\d+$/.test(n)); } catch { return []; }
  names.sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
  return names.slice(0, max).map((tty) => {
    let fd = -1;
    try {
      fd = openTty(join(devDir, tty));
      const lines = modemLines(fd, `/dev/${tty}`);
      return { tty, exists: true, carrier: (lines & TIOCM_CAR) !== 0 };
    } catch {
      return { tty, exists: false, carrier: false };
    } finally {
      if (fd >= 0) closeTty(fd);
    }
  });
}

export function readSpcr(path = "/sys/firmware/acpi/tables/SPCR"): Uint8Array | null {
  if (!existsSync(path)) return null;
  try { return new Uint8Array(readFileSync(path)); } catch { return null; }
}

/**
 * Sets the chosen port's speed and redirects /dev/console to it (TIOCCONS), so our output and that of every child
 * whose stdio is /dev/console appear on the serial line. Returns the open fd, kept for the rescue shell.
 */
export function configureConsole(choice: ConsoleChoice, devDir = "/dev"): number {
  const path = join(devDir, choice.tty);
  if (!supportedBaud(choice.baud)) throw new Error(`console ${choice.tty}: unsupported baud rate ${choice.baud}`);
  const fd = openTty(path);
  try {
    setBaud(fd, choice.baud, path);
    if (choice.source !== "cmdline") redirectConsole(fd, path);
  } catch (e) {
    closeTty(fd);
    throw e;
  }
  return fd;
}

export function describeChoice(c: ConsoleChoice): string {
  return c.source === "cmdline"
    ? `Console ${c.tty},${c.baud} from the kernel command line`
    : `Automatic console configured for ${c.tty},${c.baud}`;
}
