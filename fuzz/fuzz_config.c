/* Fuzz target: the configuration parser and checker (an operator's
 * typo must give a message, never a crash). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[] = "/tmp/mb-fuzz-config-XXXXXX";
	int fd = mkstemp(path);
	FILE *devnull;
	struct config *cfg;

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
