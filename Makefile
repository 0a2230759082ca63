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

.PHONY: demo test check minio tools rie chromium jinja2 llama zip-libs graviton chatbot zip image bench bench-llm bench-coldstart bench-sizes fuzz

## demo: run the Lambda chatbot locally: MinIO, a generated model, the chat page
# (DEMO_FLAGS=-link lambda-like puts MinIO behind a Lambda-shaped link)
demo: minio chatbot
	go run ./examples/demo -chatbot $(BIN)/chatbot $(DEMO_FLAGS)

## chatbot: build the chatbot for this machine into .bin/
chatbot:
	go build -o $(BIN)/chatbot ./examples/chatbot

## zip: build the chatbot's Lambda zip, dist/chatbot-$(ARCH).zip and dist/chatbot.zip (ARCH=amd64 or arm64)
# The bootstrap is pure Go (CGO_ENABLED=0: llm reaches llama.cpp through
# purego and libffi). lib/ holds llama.cpp's libraries with every CPU
# variant of ARCH, libffi.so.8 (Debian's needs glibc 2.27) and a
# libstdc++.so.6 linked from GCC 11's PIC archive (Debian's own needs glibc
# 2.36; provided.al2023's is GCC 11's too); libgcc_s.so.1 is provided.al2023's.
# lambdazip checks every ELF file against glibc 2.34. Keep these steps in
# step with lambdaZip in examples/chatbot/e2e_test.go.
ARCH ?= $(GOARCH)
ifeq ($(filter $(ARCH),amd64 arm64),)
$(error ARCH=$(ARCH): use amd64 or arm64)
endif
LAMBDA_TAGS := lambda.norpc
TRIPLET_amd64 := x86_64-linux-gnu
TRIPLET_arm64 := aarch64-linux-gnu
LIBFFI = /usr/lib/$(TRIPLET_$(ARCH))/libffi.so.8
LIBFFI_PKG_amd64 := libffi8
LIBFFI_PKG_arm64 := libffi8:arm64
# Another architecture's libffi8 comes from Debian's multiarch (it pulls in
# that architecture's libc6, which TestGraviton runs the arm64 zip with).
ADD_ARCH = $(if $(filter $(ARCH),$(GOARCH)),,{ dpkg --print-foreign-architectures | grep -qx $(ARCH) || $(SUDO) dpkg --add-architecture $(ARCH); } &&)
GCC11_PIC = $(if $(filter $(ARCH),$(GOARCH)),/usr/lib/gcc/$(TRIPLET_$(ARCH))/11,/usr/lib/gcc-cross/$(TRIPLET_$(ARCH))/11)
GCC11_PKG = $(if $(filter $(ARCH),$(GOARCH)),libstdc++-11-pic,libstdc++-11-pic-$(ARCH)-cross gcc-$(TRIPLET_$(ARCH)))
ZIP_CC = $(if $(filter $(ARCH),$(GOARCH)),gcc,$(TRIPLET_$(ARCH))-gcc)
LIBSTDCXX = $(BIN)/libstdc++-gcc11/$(ARCH)/libstdc++.so.6
zip: llama zip-libs
	GOOS=linux GOARCH=$(ARCH) CGO_ENABLED=0 go build -tags $(LAMBDA_TAGS) -ldflags "-s -w" -o dist/$(ARCH)/bootstrap ./examples/chatbot
	go run ./examples/chatbot/lambdazip -arch $(ARCH) -glibc 2.34 -llama $(LLAMA_DIR) -lib $(LIBFFI) -lib $(LIBSTDCXX) \
		-o dist/chatbot-$(ARCH).zip dist/$(ARCH)/bootstrap
	cp dist/chatbot-$(ARCH).zip dist/chatbot.zip   # what examples/chatbot/template.yaml deploys

## image: build the chatbot's container image for SnapStart, $(IMAGE), from the zip's bootstrap and lib/
## (examples/chatbot/Dockerfile; needs docker or podman with a running engine that can pull public.ecr.aws)
# The engine is checked first: without one, nothing is built and the
# reason is printed. Deploy with examples/chatbot/template-image.yaml.
# IMAGE_FLAGS go to the engine's build (e.g. --build-arg BASE=a mirror of the base).
IMAGE ?= memload-chatbot:$(ARCH)
IMAGE_FLAGS ?=
image:
	@engine=; why=; \
	for e in docker podman; do \
	  if ! command -v $$e >/dev/null 2>&1; then why="$$why\n  $$e: not installed"; continue; fi; \
	  if out=$$($$e info 2>&1 >/dev/null); then engine=$$e; break; fi; \
	  why="$$why\n  $$e ($$(command -v $$e)): $$(printf '%s' "$$out" | grep -v '^$$' | tail -1)"; \
	done; \
	if [ -z "$$engine" ]; then \
	  printf "make image: no container engine can build the image here:$$why\n"; \
	  echo "Run make image where docker or podman runs and can pull public.ecr.aws/lambda/provided:al2023 (make zip builds the same bootstrap and lib/ without one)."; \
	  exit 1; \
	fi; \
	command -v unzip >/dev/null || { echo "make image: unzip is missing (apt-get install unzip)"; exit 1; }; \
	$(MAKE) --no-print-directory zip ARCH=$(ARCH) && \
	rm -rf dist/image-$(ARCH) && mkdir -p dist/image-$(ARCH) && unzip -q dist/chatbot-$(ARCH).zip -d dist/image-$(ARCH) && \
	if $$engine build --platform linux/$(ARCH) $(IMAGE_FLAGS) -f examples/chatbot/Dockerfile -t $(IMAGE) dist/image-$(ARCH); then \
	  echo "built $(IMAGE) with $$engine: push it to ECR, then sam deploy -t examples/chatbot/template-image.yaml with ImageUri"; \
	else \
	  echo "make image: $$engine build failed; if it could not pull the base, check access to public.ecr.aws, or use a mirror: IMAGE_FLAGS=--build-arg BASE=MIRROR/provided:al2023@sha256:..."; exit 1; \
	fi

## zip-libs: libffi and a glibc-2.34 libstdc++ for ARCH's Lambda zip (installs Debian's packages when missing)
zip-libs: $(LIBSTDCXX)
	@[ -f $(LIBFFI) ] || { $(ADD_ARCH) $(SUDO) apt-get update && $(SUDO) apt-get install -y $(LIBFFI_PKG_$(ARCH)); }
$(BIN)/libstdc++-gcc11/%/libstdc++.so.6:
	@[ -f $(GCC11_PIC)/libstdc++_pic.a ] || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $(GCC11_PKG); }
	mkdir -p $(dir $@)
	$(ZIP_CC) -shared -nodefaultlibs -o $@ -Wl,--whole-archive $(GCC11_PIC)/libstdc++_pic.a -Wl,--no-whole-archive \
		-Wl,--version-script=$(GCC11_PIC)/libstdc++_pic.map -Wl,-soname,libstdc++.so.6 -lc -lm -lgcc_s -lgcc

## test: install what the tests need, check formatting and vet, run all tests
# The shaper's accuracy tests time a link against bounds of a few percent:
# they run after the others, alone, since go test runs two packages at once
# here and llama.cpp's tests beside them starved MinIO and the client.
SHAPER_TIMED := TestShaperAccuracy|TestShaperFirstByteAndSlowShare
test: tools check
	go test -race -count=1 -timeout 45m -skip '^($(SHAPER_TIMED))$$' ./...
	go test -race -count=1 -timeout 10m -run '^($(SHAPER_TIMED))$$' ./internal/testutil

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

## bench-coldstart: the chatbot's cold start (S3 -> memfd -> SHA-256 -> llama.cpp -> first token) on shaped links
# (Lambda-like, with a slow tail, Lambda's raised bandwidth quota at 2 and 10 GB, 300 and 800 MB/s), memload.Load
# with repacking on and off against the SDK's downloaders; about 30 minutes
# (BENCH_COLDSTART_FLAGS="-repack on" or "-repack off": one of the two; "-shapes lambda-like,..." fewer links)
bench-coldstart: minio llama
	go run ./internal/benchcold -rounds 3 $(BENCH_COLDSTART_FLAGS)

## bench-sizes: the chatbot at each Lambda memory size this machine can emulate (cgroups; as root), and the smallest that works
bench-sizes: minio llama
	go run ./internal/benchsizes $(BENCH_SIZES_FLAGS)

## fuzz: a minute each for the URI and GGUF header parsers, s3load against a hostile server, and llm.Load of
## damaged models in child processes (FUZZTIME=10m for longer)
FUZZTIME ?= 60s
fuzz: llama
	go test -run=XXX -fuzz=FuzzParseURI -fuzztime=$(FUZZTIME) ./s3load
	# Network timing makes many inputs look new; minimizing each for the
	# default minute would leave little time to fuzz.
	go test -run=XXX -fuzz=FuzzHostileServer -fuzztime=$(FUZZTIME) -fuzzminimizetime=10x ./s3load
	go test -run=XXX -fuzz=FuzzParse -fuzztime=$(FUZZTIME) ./llm/internal/gguf
	go test -run=XXX -fuzz=FuzzGrammar -fuzztime=$(FUZZTIME) ./llm/jsonschema
	# Each input that passes the GGUF check is loaded by llama.cpp in a
	# child process: a crash there fails the input, not the fuzzer.
	go test -run=XXX -fuzz=FuzzLoad -fuzztime=$(FUZZTIME) ./llm

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	CGO_ENABLED=0 go build ./...

tools: minio rie chromium jinja2 llama zip-libs graviton

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

## graviton: on amd64, what TestGraviton needs to run the arm64 zip: Debian's qemu-user-static, then make llama zip-libs ARCH=arm64
# The test runs the bootstrap under qemu-aarch64-static -L / with the glibc
# of libc6:arm64 (libffi8:arm64 pulls it in), not with the cross
# toolchain's sysroot: its ld.so, with the libc.so.6 that /etc/ld.so.cache
# then finds (libc6:arm64, another build), hangs at start. Off Debian
# nothing is installed and the test says why it skips.
graviton:
ifeq ($(GOARCH),amd64)
	@if [ -x /usr/bin/qemu-aarch64-static ] && [ -f /usr/lib/aarch64-linux-gnu/libffi.so.8 ]; then :; \
	elif grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then \
	  [ -x /usr/bin/qemu-aarch64-static ] || { $(SUDO) apt-get update && $(SUDO) apt-get install -y qemu-user-static; } || exit 1; \
	else echo "graviton: not Debian; TestGraviton will skip (it needs Debian's qemu-user-static and libffi8:arm64)"; exit 0; fi; \
	$(MAKE) --no-print-directory llama zip-libs ARCH=arm64
endif

## rie: build the AWS Lambda Runtime Interface Emulator into .bin/ (chatbot's end-to-end test)
rie: $(BIN)/aws-lambda-rie
$(BIN)/aws-lambda-rie:
	GOBIN=$(BIN) go install $(RIE_MODULE)

## jinja2: install Python's jinja2 when missing (llm's reference renderer of chat templates)
jinja2:
	@python3 -c 'import jinja2' 2>/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-jinja2; }

## chromium: install Debian's chromium when missing (chatbot's chat page test)
chromium:
	@[ -x /usr/bin/chromium ] || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

## minio: build MinIO (AGPL, run as a separate process only) into .bin/
minio: $(BIN)/minio
$(BIN)/minio:
	GOBIN=$(BIN) go install $(MINIO_MODULE)
