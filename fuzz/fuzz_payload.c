/* Fuzz target: the webhook body validator (anything HighLevel, or anyone
 * reaching the Delivery URL, can send). */
#include "payload.h"

#include <stddef.h>
#include <stdint.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *error, *field;
	struct payload *p = payload_parse((const char *)data, size, &error, &field);
	payload_free(p);
	return 0;
}
