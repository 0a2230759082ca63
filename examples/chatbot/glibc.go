//go:build linux && cgo

package main

// The Lambda zip links libstdc++ and libgcc statically, since Amazon Linux
// 2023 has older ones, but links glibc dynamically, and AL2023's glibc is
// 2.34. The static libraries of a newer toolchain (GCC 12 on Debian 12, with
// glibc 2.36) call two glibc functions younger than 2.34: arc4random (2.36,
// std::random_device) and _dl_find_object (2.35, the unwinder that C++
// exceptions use). Definitions in the executable take precedence over the
// shared libc, so these two keep the binary within glibc 2.34; `make zip`
// checks that no newer symbol version is left.

/*
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 36)
uint32_t arc4random(void) {
	uint32_t v;
	while (getrandom(&v, sizeof v, 0) != sizeof v) {
	}
	return v;
}
#endif

#ifdef DLFO_STRUCT_HAS_EH_DBASE
struct findObject {
	uintptr_t pc;
	struct dl_find_object *result;
	int found;
};

static int findObjectPhdr(struct dl_phdr_info *info, size_t size, void *data) {
	struct findObject *f = data;
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	void *ehFrame = NULL;
	int contains = 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		uintptr_t start = info->dlpi_addr + p->p_vaddr;
		if (p->p_type == PT_LOAD) {
			if (f->pc >= start && f->pc < start + p->p_memsz) {
				contains = 1;
			}
			if (start < lo) {
				lo = start;
			}
			if (start + p->p_memsz > hi) {
				hi = start + p->p_memsz;
			}
		} else if (p->p_type == PT_GNU_EH_FRAME) {
			ehFrame = (void *)start;
		}
	}
	if (!contains) {
		return 0;
	}
	struct dl_find_object *r = f->result;
	r->dlfo_flags = 0;
	r->dlfo_map_start = (void *)lo;
	r->dlfo_map_end = (void *)hi;
	r->dlfo_link_map = NULL;
	r->dlfo_eh_frame = ehFrame;
#if DLFO_STRUCT_HAS_EH_DBASE
	r->dlfo_eh_dbase = NULL;
#endif
	f->found = 1;
	return 1;
}

// _dl_find_object as glibc 2.35 documents it, for what the unwinder needs
// (the PT_GNU_EH_FRAME segment of the object holding pc), found with
// dl_iterate_phdr as libgcc did before 2.35.
int _dl_find_object(void *pc, struct dl_find_object *result) {
	struct findObject f = {(uintptr_t)pc, result, 0};
	dl_iterate_phdr(findObjectPhdr, &f);
	return f.found ? 0 : -1;
}
#endif
*/
import "C"
