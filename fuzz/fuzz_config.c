/* Fuzz target: the configuration parser and checker (an operator's
 * typo must give a message, never a crash). */
#include "config.h"
#include "tmpdir.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

/* The file lives in a private directory, one level down, so that a
 * relative include of "*" or "../x" sees the same files on every machine
 * (a fuzzed config is free to glob). Globs reaching further ("../../x",
 * "/usr/x") see what the machine has; config.c's 16 MiB cap bounds what
 * they cost. */
static const char *
fuzz_dir(void)
{
	static char dir[] = "/tmp/mb-fuzz-config-XXXXXX/etc";
	static const char *made;
	if (!made) {
		dir[strlen(dir) - 4] = '\0';
		if (!mkdtemp(dir))
			return NULL;
		fuzz_tmpdir_remove_at_exit(dir);
		dir[strlen(dir)] = '/';
		if (mkdir(dir, 0700) < 0)
			return NULL;
		made = dir;
	}
	return made;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[256];
	FILE *devnull;
	struct config *cfg;
	int fd;

	if (!fuzz_dir())
		return 0;
	snprintf(path, sizeof(path), "%s/fuzz.conf", fuzz_dir());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		unlink(path);
		return 0;
	}
	close(fd);
	devnull = fopen("/dev/null", "w");
	cfg = config_load(path, devnull);
	config_free(cfg);
	fclose(devnull);
	unlink(path);
	return 0;
}
