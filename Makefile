# taskledger — run `make help` for the targets.
GO        ?= go
BIN       := bin/taskledger
PKGS      := ./...
STATICCHECK_VERSION := v0.8.2

.PHONY: help run build test test-short fuzz bench lint migrate db clean screenshots

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: build ## run the service on http://localhost:8080: embedded NATS, and a Postgres found or started
	exec ./$(BIN) dev

build: ## build bin/taskledger
	$(GO) build -o $(BIN) ./cmd/taskledger

test: ## run every test (unit, fuzz seeds, integration) with the race detector
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 $(PKGS)

test-short: ## run the tests without the race detector
	$(GO) test -count=1 $(PKGS)

fuzz: ## fuzz the webhook parser, its field scanner, dedup-key derivation and signature checks, 60s each
	$(GO) test ./domain -run '^$$' -fuzz FuzzParseAndKey -fuzztime 60s
	$(GO) test ./internal/sources -run '^$$' -fuzz FuzzVerify -fuzztime 60s
	$(GO) test ./domain -run '^$$' -fuzz FuzzEachField -fuzztime 60s

bench: ## run the Go benchmarks against real Postgres and JetStream
	$(GO) test -run '^$$' -bench . $(PKGS)

screenshots: ## refresh docs/console-*.png from the console's browser test (needs chromium)
	TASKLEDGER_CONSOLE_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run TestConsoleInARealBrowser ./integration_test

lint: ## gofmt, go vet, go mod tidy and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)
	$(GO) mod tidy -diff
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

migrate: ## apply the embedded migrations to TASKLEDGER_DATABASE_URL
	$(GO) run ./cmd/taskledger migrate up

db: ## start Postgres and NATS with Docker Compose (for machines without them)
	docker compose up -d --wait postgres nats

clean: ## remove build output and the embedded server's data
	rm -rf bin data
