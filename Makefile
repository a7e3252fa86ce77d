# airroot — see README.md. `make` builds dist/airroot; `make test` installs what it needs and runs every test.
BUN := node_modules/.bin/bun
SRC := $(shell find src -name '*.ts' 2>/dev/null) build.ts package.json

.PHONY: all deps build test test-unit typecheck demo bench initramfs clean
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

demo: deps build
	$(BUN) run scripts/demo.ts

bench: deps build
	$(BUN) run bench/run.ts

# The node initramfs: Debian bookworm's kernel modules + dist/airroot + busybox + sshd, zstd cpio.
# SITE=DIR adds a site config directory (ca.pem, image-key.pem, authorized_keys) as /etc/airroot/site.
initramfs: build
	$(BUN) initramfs/build.ts --kernel-dir $$(bash initramfs/fetch-kernel.sh .cache/kernel) --out dist/initramfs.cpio.zst $(if $(SITE),--site $(SITE))

clean:
	rm -rf dist .cache
