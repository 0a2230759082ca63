# memload's tasks. `make demo` and `make test` are all a fresh clone needs.
#
# cgo compiles llama.cpp (package llm) with these flags. Without them ggml
# has no SIMD kernels and inference is 15-30x slower; every change to them
# costs a full 4-minute rebuild, so every target uses the same ones.
GOARCH := $(shell go env GOARCH)
ifeq ($(GOARCH),arm64)
SIMD_FLAGS := -O3 -march=armv8.2-a+fp16+dotprod
else
SIMD_FLAGS := -O3 -march=x86-64-v3
endif
export CGO_CFLAGS := $(SIMD_FLAGS)
export CGO_CXXFLAGS := $(SIMD_FLAGS)

BIN := $(CURDIR)/.bin
MINIO_MODULE := github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
export MEMLOAD_MINIO := $(BIN)/minio

.PHONY: demo test check minio tools

## demo: start MinIO, upload a generated object, load it into memory
demo: minio
	go build -o $(BIN)/memload ./examples/memload
	go run ./examples/demo -memload $(BIN)/memload

## test: install what the tests need, check formatting and vet, run all tests
test: tools check
	go test -race -count=1 -timeout 45m ./...

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	CGO_ENABLED=0 go build ./memfd/... ./s3load/...

tools: minio

## minio: build MinIO (AGPL, run as a separate process only) into .bin/
minio: $(BIN)/minio
$(BIN)/minio:
	GOBIN=$(BIN) go install $(MINIO_MODULE)
