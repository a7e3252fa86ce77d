// @peculiar/x509, loaded after the Reflect metadata polyfill it needs (through tsyringe) and bound to WebCrypto.
// Both are CommonJS and are required here, in order, because import statements do not fix their evaluation
// order the same way in `bun run` (CJS evaluated at link time) and in a bundle (ESM build, lazily initialised).
import type * as X509 from "@peculiar/x509";

require("reflect-metadata");
export const x509: typeof X509 = require("@peculiar/x509");
x509.cryptoProvider.set(crypto);
export type { X509 };
