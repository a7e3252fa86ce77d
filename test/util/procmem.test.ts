// processMemory: the two /proc/self/status fields `airroot status` reports.
import { expect, test } from "bun:test";
import { processMemory, statusFieldMiB } from "../../src/util/procmem";

test("reads VmRSS and RssAnon in MiB; missing fields are NaN, never a throw", () => {
  const text = "Name:\tairroot\nVmHWM:\t  90000 kB\nVmRSS:\t   61440 kB\nRssAnon:\t   14336 kB\nRssFile:\t 47104 kB\n";
  expect(processMemory(text)).toEqual({ vmRssMiB: 60, rssAnonMiB: 14 });
  const none = processMemory("Name:\tx\n");
  expect(Number.isNaN(none.vmRssMiB) && Number.isNaN(none.rssAnonMiB)).toBe(true);
  expect(processMemory("VmRSSX:\t1 kB\nXVmRSS:\t2 kB\n").vmRssMiB).toBeNaN(); // whole field names only
  expect(statusFieldMiB(text, "VmHWM")).toBeCloseTo(87.89, 2); // any kB field, as the benchmarks read them
});

test("this process: VmRSS includes the private part", () => {
  const m = processMemory();
  expect(m.vmRssMiB).toBeGreaterThan(m.rssAnonMiB);
  expect(m.rssAnonMiB).toBeGreaterThan(0);
});
