#!/usr/bin/env bun
import { defineCommand, runMain } from "citty";
declare const AIRROOT_VERSION: string | undefined;
const version = typeof AIRROOT_VERSION === "string" ? AIRROOT_VERSION : "0.1.0-dev";
const main = defineCommand({
  meta: { name: "airroot", version, description: "Diskless boot for HPC clusters" },
  subCommands: {},
});
runMain(main);
