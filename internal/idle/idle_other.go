//go:build !linux

package idle

func lower() {}
