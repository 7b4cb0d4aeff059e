# peerconnection: signaling server and native video-call client.
# `make test` installs what the build needs (Debian packages) and runs every test.

PORT ?= 8888
ARGS ?=
CARGO ?= cargo
APT_PACKAGES := libsdl2-dev nasm libclang-dev pkg-config chromium iproute2 xvfb libopus-dev libasound2-dev coturn nftables redis-server haproxy
# The ALSA test runs through a PulseAudio null sink (no sound hardware on CI).
APT_PACKAGES += pulseaudio libasound2-plugins
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps browser-deps build run-server run-client test bench lint demo cluster

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(CARGO) build --release --bins

run-server: deps
	$(CARGO) run --release --bin peerconnection_server -- --port $(PORT) $(ARGS)

run-client: deps
	$(CARGO) run --release --bin peerconnection_client -- --port $(PORT) $(ARGS)

# playwright-core for the browser tests (drives Debian's chromium; downloads no browser).
browser-deps: deps
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	@[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund

test: deps browser-deps
	$(CARGO) build --release --bins
	$(CARGO) test --release

bench: deps
	$(CARGO) bench

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# The main job: a demo call between two headless clients (stops by itself).
demo: build
	./scripts/demo.sh

# Redis, three servers sharing it and HAProxy in front, on loopback (Ctrl-C stops them).
cluster: build
	PORT=$(PORT) ./scripts/cluster.sh
