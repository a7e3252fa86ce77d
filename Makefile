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

clean:
	rm -rf dist .cache
