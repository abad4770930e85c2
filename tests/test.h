/* Minimal table-driven test helpers (Dovecot test_assert_idx style):
 * a failure prints file:line, the row index and the expression. */
#ifndef MB_TEST_H
#define MB_TEST_H

#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

static int test_failures;

#define CHECK_IDX(expr, idx) do { \
	if (!(expr)) { \
		fprintf(stderr, "%s:%d: row %d: CHECK failed: %s\n", __FILE__, __LINE__, (int)(idx), #expr); \
		test_failures++; \
	} \
} while (0)
#define CHECK(expr) CHECK_IDX(expr, -1)

static inline int
test_done(const char *name)
{
	if (test_failures) {
		fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
		return 1;
	}
	printf("%s: ok\n", name);
	return 0;
}

#endif
