# memload's tasks. `make demo` and `make test` are all a fresh clone needs.
GOARCH := $(shell go env GOARCH)
BIN := $(CURDIR)/.bin
MINIO_MODULE := github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
export MEMLOAD_MINIO := $(BIN)/minio
# llama.cpp release v0.5.0, prebuilt with GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON
# (every CPU variant, picked at run time), as node-llama-cpp ships it on npm.
# The integrity is the npm registry's (npm view PACKAGE dist.integrity); the
# tarball is checked against it before it is unpacked.
LLAMA_NPM_VERSION := 3.22.1
LLAMA_INTEGRITY_linux-x64 := sha512-5uCCDNqWCNfaAm8aR/Uzxbo4HBpKgNF91kCHPepKhgMgV2OAmatoefbOlMihsqCiH2Od35E/eUHQCFbfRBJuOg==
LLAMA_INTEGRITY_linux-arm64 := sha512-W+7naKCXX9/eEjjFmRS8vvx91QyLXDbeFxexZc3bh/PtQABZgmRL3C0AtYYXn4YGTj/3Qor4lWZn2tpjZFPLdQ==
LLAMA_PLATFORM_amd64 := linux-x64
LLAMA_PLATFORM_arm64 := linux-arm64
RIE_MODULE := github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test check minio tools rie chromium llama chatbot zip bench bench-llm fuzz

## demo: run the Lambda chatbot locally: MinIO, a generated model, the chat page
demo: minio chatbot
	go run ./examples/demo -chatbot $(BIN)/chatbot $(DEMO_FLAGS)

## chatbot: build the chatbot for this machine into .bin/
chatbot:
	go build -o $(BIN)/chatbot ./examples/chatbot

## zip: build the chatbot's Lambda zip, dist/chatbot-$(ARCH).zip and dist/chatbot.zip (ARCH=amd64 or arm64)
# provided.al2023 has glibc 2.34 and older libstdc++/libgcc: link those two
# statically, and let lambdazip check the glibc symbol versions. Keep these
# flags in step with lambdaBuildFlags in examples/chatbot/e2e_test.go.
ARCH ?= $(GOARCH)
LAMBDA_TAGS := lambda.norpc
LAMBDA_LDFLAGS := -s -w -extldflags '-static-libstdc++ -static-libgcc'
ifeq ($(ARCH),$(GOARCH))
ZIP_ENV :=
else ifeq ($(ARCH),arm64)
ZIP_ENV := GOARCH=arm64 CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ \
	CGO_CFLAGS='-O3 -march=armv8.2-a+fp16+dotprod' CGO_CXXFLAGS='-O3 -march=armv8.2-a+fp16+dotprod'
else ifeq ($(ARCH),amd64)
ZIP_ENV := GOARCH=amd64 CC=x86_64-linux-gnu-gcc CXX=x86_64-linux-gnu-g++ \
	CGO_CFLAGS='-O3 -march=x86-64-v3' CGO_CXXFLAGS='-O3 -march=x86-64-v3'
else
$(error ARCH=$(ARCH): use amd64 or arm64)
endif
zip:
	@if [ -n "$(ZIP_ENV)" ] && ! command -v $(if $(filter arm64,$(ARCH)),aarch64,x86_64)-linux-gnu-g++ >/dev/null; then \
		echo "make zip ARCH=$(ARCH) needs a cross compiler: $(SUDO) apt-get install -y $(if $(filter arm64,$(ARCH)),gcc-aarch64-linux-gnu g++-aarch64-linux-gnu,gcc-x86-64-linux-gnu g++-x86-64-linux-gnu)"; exit 1; fi
	$(ZIP_ENV) GOOS=linux CGO_ENABLED=1 go build -tags $(LAMBDA_TAGS) -ldflags "$(LAMBDA_LDFLAGS)" -o dist/$(ARCH)/bootstrap ./examples/chatbot
	go run ./examples/chatbot/lambdazip -arch $(ARCH) -glibc 2.34 -o dist/chatbot-$(ARCH).zip dist/$(ARCH)/bootstrap
	cp dist/chatbot-$(ARCH).zip dist/chatbot.zip   # what examples/chatbot/template.yaml deploys

## test: install what the tests need, check formatting and vet, run all tests
test: tools check
	go test -race -count=1 -timeout 45m ./...

## bench: CPU, wall time and RSS of a 1 GiB S3 download: memload against the AWS SDK's downloaders, over HTTP and TLS
bench: minio
	go run ./internal/bench -rounds 5 -coldstart 3 -variants memload,memload:seed,manager,manager:16:16,transfermanager,manager+memfd,transfermanager+memfd,memload:16:16,memload:noreserve,net,floor,floor:noreserve,floor:map

## bench-llm: llama.cpp load time, memory and speed on a 1.5B-shaped Q4_K_M model (generated once into .cache/models),
## side by side with the engine before llama.cpp v0.5.0 (ollama v0.11.4's cgo binding, built from git history)
BENCH_OLD_REV := 205dbdd22b409819241d9b6fb56beca0f81c8dba
BENCH_OLD := $(CURDIR)/.cache/benchllm-old-$(BENCH_OLD_REV)
bench-llm: llama $(BENCH_OLD)/benchllm
	go run ./internal/benchllm -rounds 3 -old $(BENCH_OLD)/benchllm
$(BENCH_OLD)/benchllm:
	rm -rf $(BENCH_OLD) && mkdir -p $(BENCH_OLD)/src
	git archive $(BENCH_OLD_REV) | tar -x -C $(BENCH_OLD)/src
	cd $(BENCH_OLD)/src && CGO_CFLAGS='-O3 -march=x86-64-v3' CGO_CXXFLAGS='-O3 -march=x86-64-v3' go build -o $@ ./internal/benchllm

## fuzz: a minute each for the URI and GGUF header parsers and s3load against a hostile server (FUZZTIME=10m for longer)
FUZZTIME ?= 60s
fuzz:
	go test -run=XXX -fuzz=FuzzParseURI -fuzztime=$(FUZZTIME) ./s3load
	# Network timing makes many inputs look new; minimizing each for the
	# default minute would leave little time to fuzz.
	go test -run=XXX -fuzz=FuzzHostileServer -fuzztime=$(FUZZTIME) -fuzzminimizetime=10x ./s3load
	go test -run=XXX -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./llm/internal/gguf

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	CGO_ENABLED=0 go build ./memfd/... ./s3load/...

tools: minio rie chromium llama

## llama: install llama.cpp's prebuilt libraries for ARCH into .bin/llama/ (from npm, checked against the pinned integrity)
LLAMA_PLATFORM = $(LLAMA_PLATFORM_$(ARCH))
LLAMA_DIR = $(BIN)/llama/$(LLAMA_PLATFORM)
export MEMLOAD_LLAMA_LIB := $(BIN)/llama/$(LLAMA_PLATFORM_$(GOARCH))
llama: $(LLAMA_DIR)/libllama.so
$(BIN)/llama/%/libllama.so:
	@command -v npm >/dev/null || { echo "make llama needs npm: $(SUDO) apt-get install -y npm"; exit 1; }
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  pkg=@node-llama-cpp/$*@$(LLAMA_NPM_VERSION); \
	  want='$(LLAMA_INTEGRITY_$*)'; \
	  tgz=$$(cd "$$tmp" && npm pack --silent "$$pkg"); \
	  got="sha512-$$(openssl dgst -sha512 -binary "$$tmp/$$tgz" | base64 -w0)"; \
	  if [ "$$got" != "$$want" ]; then echo "$$pkg: integrity $$got, want $$want: not unpacked"; exit 1; fi; \
	  mkdir -p "$$tmp/x" && tar -xzf "$$tmp/$$tgz" -C "$$tmp/x"; \
	  rm -rf "$(BIN)/llama/$*.tmp" && mkdir -p "$(BIN)/llama/$*.tmp"; \
	  cp "$$tmp"/x/package/bins/$*/lib*.so "$$tmp/x/package/LICENSE" "$(BIN)/llama/$*.tmp/"; \
	  rm -f "$(BIN)/llama/$*.tmp/libllama-common.so"; \
	  ln -s libllama.v0.5.0.so "$(BIN)/llama/$*.tmp/libllama.so"; \
	  ln -s libggml.v0.5.0.so "$(BIN)/llama/$*.tmp/libggml.so"; \
	  rm -rf "$(BIN)/llama/$*" && mv "$(BIN)/llama/$*.tmp" "$(BIN)/llama/$*"; \
	  echo "installed $$pkg (llama.cpp v0.5.0) into $(BIN)/llama/$*"

## rie: build the AWS Lambda Runtime Interface Emulator into .bin/ (chatbot's end-to-end test)
rie: $(BIN)/aws-lambda-rie
$(BIN)/aws-lambda-rie:
	GOBIN=$(BIN) go install $(RIE_MODULE)

## chromium: install Debian's chromium when missing (chatbot's chat page test)
chromium:
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

## minio: build MinIO (AGPL, run as a separate process only) into .bin/
minio: $(BIN)/minio
$(BIN)/minio:
	GOBIN=$(BIN) go install $(MINIO_MODULE)
