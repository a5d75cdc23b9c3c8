# The two set-up commands are `make run` and `make test`. Both find or start a
# Postgres with scripts/devdb.sh: DATABASE_URL if it answers, else a private
# cluster under .pgdata/ built from the installed Postgres binaries.

GO       ?= go
BIN      := bin/outbox
SQLC     := $(shell $(GO) env GOPATH)/bin/sqlc
SQLC_VERSION := v1.31.1

.PHONY: run test test-faults fuzz build vet generate db db-stop clean bench

## run: serve outbox.example.yaml with the demo target, on a local Postgres
run: build
	@scripts/run.sh

## test: run every test with the race detector against a real Postgres, then the fault-injection suite
test:
	@url=$$(scripts/devdb.sh) && TEST_DATABASE_URL="$$url" $(GO) test -race -count=1 -timeout 30m ./...
	@$(MAKE) --no-print-directory test-faults

## test-faults: the fault-injection suite: the real binary, SIGKILLs, Postgres crashes, failing and hanging
## targets, on Postgres clusters of its own; its cases run in parallel, in about two minutes
test-faults:
	OUTBOX_FAULTS=1 $(GO) test -race -count=1 -v -parallel 8 -timeout 15m ./faults/

## bench: measure intake and delivery against pgbench baselines (see bench/README.md)
bench:
	$(GO) run ./bench $(BENCH_FLAGS)

## fuzz: run each fuzz target for FUZZTIME (15s); seeds are in */testdata/fuzz/
FUZZTIME ?= 15s
FUZZ_TARGETS := ./config:FuzzParse ./handler:FuzzExtractKey ./handler:FuzzHMACVerifier \
	./handler:FuzzStandardWebhooksVerifier ./handler:FuzzCredentialVerifiers ./handler:FuzzIntake
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz: $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test $$pkg -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s; \
	done

## build: build bin/outbox
build:
	$(GO) build -o $(BIN) ./cmd/outbox

vet:
	$(GO) vet ./...

## generate: regenerate sql/dbsqlc from sql/queries (installs sqlc if needed; cgo, ~90 s once)
generate:
	@test -x $(SQLC) || CGO_ENABLED=1 $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)
	cd sql && $(SQLC) generate

## db: start the private Postgres (if needed) and print its URL
db:
	@scripts/devdb.sh

## db-stop: stop the private Postgres
db-stop:
	@scripts/devdb.sh stop

clean: db-stop
	rm -rf bin .pgdata .dev
