# airroot — see README.md. `make` builds dist/airroot; `make test` installs what it needs and runs every test.
BUN := node_modules/.bin/bun
SRC := $(shell find src -name '*.ts' 2>/dev/null) build.ts package.json

.PHONY: all deps build test test-unit typecheck demo demo-mount bench bench-storm fuzz initramfs media clean
all: build

deps:
	@bash scripts/deps.sh

build: dist/airroot
dist/airroot: $(SRC) | deps
	$(BUN) run build.ts

typecheck: deps
	node_modules/.bin/tsc --noEmit -p .

# Every test, including the ones that mount filesystems and start servers (needs root): the tests without guests
# first, then the QEMU boots in two lanes at once (scripts/test.ts; AIRROOT_TEST_ONLY=REGEX for a subset).
test: deps build
	$(BUN) run scripts/test.ts --timeout 300000

# The README's deployment walk-through for real, then a node booting through airroot in QEMU (TCG), loopback only.
demo: deps build
	$(BUN) run scripts/demo.ts

# Quick, no VM: airroot mount over three HTTPS servers on loopback, status, failover.
demo-mount: deps build
	$(BUN) run scripts/demo-mount.ts

bench: deps build
	$(BUN) run bench/run.ts

# Boot storm (needs root, no VM): STORM_NODES nodes (default 64), each in a network namespace of its own, enroll and
# mount their root at once against 2 airroot serve on one PostgreSQL and 3 nginx mirrors; one of each killed mid-storm.
bench-storm: deps build
	$(BUN) run bench/storm.ts

# Every parser of untrusted input, 100,000 mutated cases each (FUZZ_CASES=N, FUZZ_ONLY=name); `make test` runs 2000.
fuzz: deps
	$(BUN) run test/fuzz/run.ts

# The node's boot files: dist/vmlinuz (Debian's kernel: trixie's 6.12, or SUITE=bookworm for 6.1) and
# dist/initramfs.cpio.zst (its modules + dist/airroot + busybox + sshd, zstd cpio). SITE=DIR adds a site directory
# (`airroot serve site-config`). The kernel's suite is fetched with a private apt state; the host's apt is untouched.
initramfs: build
	@kdir=$$(bash initramfs/fetch-kernel.sh .cache/kernel $(SUITE)) && cp "$$kdir/vmlinuz" dist/vmlinuz && \
	  $(BUN) initramfs/build.ts --kernel-dir "$$kdir" --out dist/initramfs.cpio.zst $(if $(SITE),--site $(SITE))
	@sb=$$(bash initramfs/fetch-signed-boot.sh .cache/kernel $(SUITE)) && cp "$$sb/shimx64.efi" "$$sb/grubx64.efi" dist/
	@echo "boot files: dist/vmlinuz dist/initramfs.cpio.zst; Secure Boot chain for network boot: dist/shimx64.efi dist/grubx64.efi"

# The boot media's first stage (busybox, curl, zstd, the modules; no airroot binary): ~10.5 MB.
dist/initramfs-stage1.cpio.zst: initramfs/build.ts initramfs/cpio.ts initramfs/stage1.sh
	@kdir=$$(bash initramfs/fetch-kernel.sh .cache/kernel $(SUITE)) && \
	  $(BUN) initramfs/build.ts --kernel-dir "$$kdir" --out $@ --stage1

# Boot media for BMC virtual media: dist/airroot.iso from the files `make initramfs` made, the first stage and
# SITE=DIR (`airroot serve site-config`); CMDLINE="..." sets the kernel parameters, SECURE_BOOT=1 adds --secure-boot.
# Fails above Lenovo XCC's upload limit, 50 MB = 50,000,000 bytes (decimal MB). The nodes fetch dist/initramfs.cpio.zst
# from the servers: `airroot serve boot-files` installs it there.
media: build dist/initramfs-stage1.cpio.zst
	@test -n "$(SITE)" || { echo "make media: give SITE=DIR, the site directory from \`airroot serve site-config\`"; exit 2; }
	@for f in dist/vmlinuz dist/initramfs.cpio.zst; do \
	  test -f $$f || { echo "make media: $$f is missing: run make initramfs SITE=$(SITE) first"; exit 2; }; done
	dist/airroot media iso --site $(SITE) --out dist/airroot.iso $(if $(CMDLINE),--cmdline "$(CMDLINE)") $(if $(SECURE_BOOT),--secure-boot)
	@size=$$(stat -c %s dist/airroot.iso); echo "dist/airroot.iso: $$size bytes ($$((size / 1000000)) MB; Lenovo XCC takes up to 50000000)"; \
	  test $$size -le 50000000 || { echo "make media: dist/airroot.iso is over 50 MB"; exit 1; }

clean:
	rm -rf dist .cache
