// Package memload puts a GGUF model from S3 straight into memory and into
// llama.cpp: [Load] downloads the object into a memory file ([memfd]),
// checks it, loads it into llama.cpp ([llm]) while it downloads where
// llama.cpp allows, and returns the model with one [Stats] that tells the
// whole cold start, first byte to ready.
//
// Load owns the path from S3 to a model: the download (package s3load,
// concurrent ranged GETs, every part checked and retried, the tensors
// fetched in the order llama.cpp loads them once the header is in), the memfd's
// memory check with room left for llama.cpp's context, the SHA-256 checked
// as the parts land, llama.cpp's load (package llm) started as soon as the
// GGUF header is in where it can be, the memfd's pages of repacked weights
// given back, and the memfd closed once llama.cpp has mapped it. The model
// is handed out only once every byte is in place and verified; on any
// error, or when ctx ends, nothing is left open.
//
// The packages underneath stay usable on their own: [s3load] for any S3
// object into memory, [llm] for a model from a path or a memfd, [memfd] for
// the memory file.
package memload
