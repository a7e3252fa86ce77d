// airroot's version: the package version the build defines (build.ts), or a development marker when run from source.
declare const AIRROOT_VERSION: string | undefined;
export const version = typeof AIRROOT_VERSION === "string" ? AIRROOT_VERSION : "0.1.0-dev";
