/* tmpdir: a fuzz target's private directory, removed when the process
 * exits (the suite replays the corpus on every build; each run would
 * otherwise leave one in /tmp). */
#ifndef MB_FUZZ_TMPDIR_H
#define MB_FUZZ_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char fuzz_tmpdir_path[256];

static int
fuzz_tmpdir_rm(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

static void
fuzz_tmpdir_cleanup(void)
{
	if (fuzz_tmpdir_path[0])
		nftw(fuzz_tmpdir_path, fuzz_tmpdir_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Removes dir and all in it at exit. */
static inline void
fuzz_tmpdir_remove_at_exit(const char *dir)
{
	snprintf(fuzz_tmpdir_path, sizeof(fuzz_tmpdir_path), "%s", dir);
	atexit(fuzz_tmpdir_cleanup);
}

#endif
