# airroot — see README.md. `make` builds dist/airroot; `make test` installs what it needs and runs every test.
BUN := node_modules/.bin/bun
SRC := $(shell find src -name '*.ts' 2>/dev/null) build.ts package.json

.PHONY: all deps build test test-unit typecheck demo demo-mount bench fuzz initramfs clean
all: build

deps:
	@bash scripts/deps.sh

build: dist/airroot
dist/airroot: $(SRC) | deps
	$(BUN) run build.ts

typecheck: deps
	node_modules/.bin/tsc --noEmit -p .

# Every test, including the ones that mount filesystems and start servers (needs root).
test: deps build
	$(BUN) test --timeout 300000

# The README's deployment walk-through for real, then a node booting through airroot in QEMU (TCG), loopback only.
demo: deps build
	$(BUN) run scripts/demo.ts

# Quick, no VM: airroot mount over three HTTPS servers on loopback, status, failover.
demo-mount: deps build
	$(BUN) run scripts/demo-mount.ts

bench: deps build
	$(BUN) run bench/run.ts

# Every parser of untrusted input, 100,000 mutated cases each (FUZZ_CASES=N, FUZZ_ONLY=name); `make test` runs 2000.
fuzz: deps
	$(BUN) run test/fuzz/run.ts

# The node's boot files: dist/vmlinuz (Debian bookworm's kernel) and dist/initramfs.cpio.zst (its modules +
# dist/airroot + busybox + sshd, zstd cpio). SITE=DIR adds a site directory (`airroot serve site-config`).
initramfs: build
	@kdir=$$(bash initramfs/fetch-kernel.sh .cache/kernel) && cp "$$kdir/vmlinuz" dist/vmlinuz && \
	  $(BUN) initramfs/build.ts --kernel-dir "$$kdir" --out dist/initramfs.cpio.zst $(if $(SITE),--site $(SITE))
	@echo "boot files: dist/vmlinuz dist/initramfs.cpio.zst"

clean:
	rm -rf dist .cache
