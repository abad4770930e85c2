/* Runs every file of the corpus directories given on the command line
 * through LLVMFuzzerTestOneInput: the regression half of fuzzing, built
 * with any compiler (the libFuzzer half needs clang, see fuzz/smoke.sh). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long len;

	if (!f)
		return -1;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(len > 0 ? (size_t)len : 1);   /* exactly len: ASan sees overreads */
	if (len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len)
		len = 0;
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)(len > 0 ? len : 0));
	free(buf);
	return 0;
}

int
main(int argc, char **argv)
{
	int n = 0;
	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		struct dirent *e;
		if (!d) {
			n += run_file(argv[i]) == 0;
			continue;
		}
		while ((e = readdir(d))) {
			char path[4096];
			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
			n += run_file(path) == 0;
		}
		closedir(d);
	}
	printf("replayed %d input(s)\n", n);
	return n > 0 ? 0 : 1;
}
