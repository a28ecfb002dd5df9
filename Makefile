# easconnector — see README.md for the targets.

GO      ?= go
BIN     ?= bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X main.version=$(VERSION)
EXE     := $(shell $(GO) env GOEXE)

# Benchmark packages that exist (bench/ may be empty).
BENCH_PKGS = $(shell $(GO) list ./bench/... ./exchange/... ./runspace/... 2>/dev/null)
# bench-profile's cases (bench/profile.sh has the default set) and counts.
PROFILE_BENCH ?=
COUNT         ?= 1

.PHONY: all build test bench bench-profile demo loadtest lint cross clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# The fast suite: race detector on, long cases skipped.
test:
	$(GO) test -race -short -timeout 10m ./...

# The benchmarks (bench/README.md lists them and their units): about 15-20
# minutes on a 2-core host, most of it the lab-latency cases, where Exchange's
# simulated latency, not the CPU, sets the time. A short version, the
# zero-latency cases of bench/ and the micro-benchmarks (about 2 minutes):
#   make bench BENCH='./././profile=zero'
# BENCH is a -bench pattern, BENCHFLAGS adds flags (e.g. -count=10 for benchstat).
BENCH      ?= .
BENCHFLAGS ?=
bench:
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -timeout=3h $(BENCHFLAGS) $(BENCH_PKGS)

# The capacity benchmarks inside the documented minimum host (2 cores at
# 1.6 GHz, 2 GiB) through a cgroup; results and the profile applied go to
# bench/results/. About 1 minute; PROFILE_BENCH= and COUNT= choose the cases.
bench-profile:
	BENCH='$(PROFILE_BENCH)' COUNT='$(COUNT)' bash bench/profile.sh

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
#
# First, bin/easload runs the short version of every load scenario against the
# real bin/easconnector, bin/exsim and bin/graphsim as processes (steady churn,
# enrolment burst, CAS failure, throttling storm, MDM outage, kill -9
# mid-apply, 200,000 devices; `bin/easload -list` shows each one's objectives
# and duration): about 27 minutes, exit 1 when an objective breaks. Reports go
# to bin/loadtest.json as well. LOADTEST_ARGS passes flags, e.g. a short run
# of one scenario: make loadtest LOADTEST_ARGS='-scenario steady'
# (about 3.5 minutes), or the capacity run: LOADTEST_ARGS='-full'.
#
# The whole target takes about an hour (not timed end to end);
# EASCONNECTOR_SOAK_DURATION=2m shortens the soak run.
LOADTEST_ARGS ?=
loadtest: build
	$(BIN)/easload -json $(BIN)/loadtest.json $(LOADTEST_ARGS)
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
