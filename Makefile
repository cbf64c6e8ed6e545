# ekaci — make targets. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

ROOT    := $(CURDIR)
BIN     := $(ROOT)/bin
MODULES := $(shell go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p')
GOTEST_FLAGS ?= -count=1 -timeout 20m

BUF_VERSION           := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GRPC_VERSION := v1.6.2

.PHONY: help
help: ## list targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-go-pbjson ## install pinned code generators into ./bin (reinstalled when the installed version is not the pinned one)

# Each tool is checked against its pin on every use: a bin/ left by an
# older checkout is reinstalled, never used at the wrong version.
.PHONY: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
$(BIN)/buf:
	@if [ "$$($@ --version 2>/dev/null)" != "$(BUF_VERSION:v%=%)" ]; then \
		echo "installing buf $(BUF_VERSION)"; GOBIN=$(BIN) GOFLAGS= go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION); fi
$(BIN)/protoc-gen-go:
	@if [ "$$($@ --version 2>/dev/null)" != "protoc-gen-go $(PROTOC_GEN_GO_VERSION)" ]; then \
		echo "installing protoc-gen-go $(PROTOC_GEN_GO_VERSION)"; GOBIN=$(BIN) GOFLAGS= go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION); fi
$(BIN)/protoc-gen-go-grpc:
	@if [ "$$($@ --version 2>/dev/null)" != "protoc-gen-go-grpc $(PROTOC_GEN_GRPC_VERSION:v%=%)" ]; then \
		echo "installing protoc-gen-go-grpc $(PROTOC_GEN_GRPC_VERSION)"; GOBIN=$(BIN) GOFLAGS= go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION); fi
.PHONY: $(BIN)/protoc-gen-go-pbjson
$(BIN)/protoc-gen-go-pbjson: # ours: always rebuilt, so generation follows its source
	go build -o $@ ./libs/pbjson/cmd/protoc-gen-go-pbjson

.PHONY: generate
generate: tools ## regenerate Go code from proto/
	$(BIN)/buf lint
	rm -rf libs/gen/ekaci
	$(BIN)/buf generate

.PHONY: checkgenerate
checkgenerate: generate ## fail when committed generated code is stale
	@if [ -n "$$(git status --porcelain -- libs/gen)" ]; then \
		echo "generated code in libs/gen is stale: run 'make generate' and commit"; git status --short -- libs/gen; exit 1; fi

.PHONY: lint
lint: $(BIN)/buf ## gofmt, go vet, buf lint/format, buf breaking against the previous commit, and a GOWORK=off build of every module
	@bad=$$(git ls-files -z '*.go' | xargs -0 gofmt -l); \
		if [ -n "$$bad" ]; then echo "not gofmt'ed (run gofmt -w):"; echo "$$bad"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	@scripts/buf-breaking.sh $(BIN)/buf
	@for m in $(MODULES); do (cd $$m && GOWORK=off go build ./...) || { echo "$$m does not build outside the workspace (GOWORK=off): run make tidy"; exit 1; }; done

.PHONY: nix
nix: ## make sure Nix is installed (apt-get install nix-bin as root)
	@scripts/ensure-nix.sh

.PHONY: sandbox
sandbox: ## make sure the checks' sandbox can run (apt-get install bubblewrap slirp4netns as root)
	@scripts/ensure-sandbox.sh

.PHONY: build
build: ## build every binary into ./bin
	@mkdir -p $(BIN)
	go build -o $(BIN)/ekaci ./services/ekaci/cmd/ekaci
	go build -o $(BIN)/ekactl ./services/admin/cmd/ekactl
	@for m in gitter reader evaluator ingress router builder checker recorder notifier webhook cache admin; do \
		if [ -d services/$$m/cmd/ekaci-$$m ]; then go build -o $(BIN)/ekaci-$$m ./services/$$m/cmd/ekaci-$$m; fi; done

.PHONY: vet
vet: ## go vet every module
	@for m in $(MODULES); do (cd $$m && go vet ./...); done

.PHONY: test
test: nix sandbox ## run every module's tests (installs Nix, bubblewrap and slirp4netns when missing)
	@fail=0; for m in $(MODULES); do \
		echo "== $$m"; (cd $$m && go test $(GOTEST_FLAGS) ./...) || fail=1; done; exit $$fail

.PHONY: chaos
chaos: nix ## crash test at scale: 300 real derivations, `ekaci run` SIGKILLed twice per run (SEED=1 REPEAT=5 DRVS=300 KILLS=2)
	cd services/ekaci && EKACI_CHAOS_DRVS=$${DRVS:-300} EKACI_CHAOS_KILLS=$${KILLS:-2} EKACI_CHAOS_SEED=$${SEED:-1} \
		EKACI_CHAOS_REPEAT=$${REPEAT:-5} go test -count=1 -timeout 60m -run '^TestCrashesChangeNoVerdict$$' -v .

.PHONY: fuzz
fuzz: ## fuzz the webhook's payload parsing (FUZZTIME=5m): no delivery may make it panic
	cd services/webhook && go test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $${FUZZTIME:-5m} -fuzzminimizetime 10s .

.PHONY: demo
demo: nix sandbox build ## the main job: a CI run over examples/demo
	@scripts/demo.sh

.PHONY: images
images: ## build the container images ekaci/static and ekaci/nix (tag EKACI_TAG, default dev) with nothing pulled; unchanged inputs are skipped
	@deploy/images/build.sh

.PHONY: mesh-test
mesh-test: ## the compose mesh under faults (needs a Docker engine): builds the images, runs the demo pull request through the mesh with each fault, compares with ekaci run
	cd deploy && EKACI_MESH=1 go test -count=1 -timeout 50m -run '^TestMesh$$' -v ./meshtest/

.PHONY: bench
bench: nix ## benchmarks at nixpkgs scale; prints one table and writes docs/BENCHMARKS-latest.md
	@mkdir -p $(BIN) docs
	go build -o $(BIN)/ekaci-bench ./services/ekaci/cmd/ekaci-bench
	$(BIN)/ekaci-bench $(BENCH_FLAGS) -out docs/BENCHMARKS-latest.md
	@echo "== payload codec (libs/pbjson) next to protojson, per buildable event"
	cd libs/pbjson && go test -run XXX -bench . -benchtime 200000x .

.PHONY: bench-mesh
bench-mesh: ## the 100,000-derivation schedule (no-op builder) through a 3-node R3 JetStream cluster (deploy/nats, host processes), every stage a process, next to the cluster's ceiling (BENCH_MESH_FLAGS)
	@mkdir -p $(BIN)
	go build -o $(BIN)/ github.com/nats-io/nats-server/v2 ./services/ekaci/cmd/ekaci-bench-mesh \
		$(foreach s,ingress router builder recorder,./services/$(s)/cmd/ekaci-$(s))
	$(BIN)/ekaci-bench-mesh -bin $(BIN) -nats-conf deploy/nats $(BENCH_MESH_FLAGS)

.PHONY: tidy
tidy: ## go mod tidy in every module (with replace directives for libs/)
	scripts/modreplace.sh
	@for m in $(MODULES); do (cd $$m && go mod tidy); done
