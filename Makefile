# easconnector — see README.md for the targets.

GO      ?= go
BIN     ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X main.version=$(VERSION)
EXE     := $(shell $(GO) env GOEXE)

# Benchmark packages that exist (bench/ may be empty).
BENCH_PKGS = $(shell $(GO) list ./bench/... ./exchange/... ./runspace/... 2>/dev/null)

.PHONY: all build test bench demo loadtest lint cross clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# The fast suite: race detector on, long cases skipped.
test:
	$(GO) test -race -short -timeout 10m ./...

bench:
	$(GO) test -run='^$$' -bench=. -benchmem $(BENCH_PKGS)

# Simulated Exchange and Intune and a mail sink in bin/easdemo, which runs
# the real bin/easconnector against them as a child process; Ctrl-C stops
# both. DEMO_ARGS passes flags (e.g. DEMO_ARGS='--devices 20000').
demo: build
	$(BIN)/easdemo --connector $(BIN)/easconnector$(EXE) $(DEMO_ARGS)

# The soak run: 50,000 devices, a first full sync, then 1 % churn and a quick
# sync per round for EASCONNECTOR_SOAK_DURATION (default 10m) with a CAS
# listener killed and restarted and Graph throttling, ending with a full sync
# that must write nothing. EASCONNECTOR_SOAK_DEVICES sets the fleet size.
#
# Then the crash run: the real easconnector killed with SIGKILL at 24 random
# points of its writes (fleets of 100, 400 and 1,500 devices), restarted,
# the MDM changed and synced again; each must end as a run without the kill,
# with every written entry in the audit log (`make test` runs 4 small ones).
loadtest:
	$(GO) test -run TestLoadSoak -timeout 60m -v ./loadtest/soak/
	$(GO) test -run TestCrashLoad -timeout 30m -v ./cmd/easconnector/

lint:
	@unformatted=$$(gofmt -l . 2>&1); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l reports:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

cross:
	GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-amd64/ ./cmd/...
	GOOS=windows GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/windows-amd64/ ./cmd/...

clean:
	rm -rf $(BIN) dist
