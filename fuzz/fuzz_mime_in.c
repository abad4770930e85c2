/* Fuzz target: parsing received mail into an inbound record (MIME walk,
 * charsets, quote stripping, DSN fields). */
#include "mime_in.h"

#include <gmime/gmime.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct inbound_msg *m;
	const char *refused;
	char *text;

	if (!ready) {
		g_mime_init();
		ready = 1;
	}
	m = mime_in_parse((const char *)data, size, 1 << 20, &refused);
	mime_in_free(m);
	/* the quote stripper on its own, NUL-terminated */
	text = malloc(size + 1);
	if (text) {
		for (size_t i = 0; i < size; i++)
			text[i] = data[i] ? (char)data[i] : ' ';
		text[size] = '\0';
		free(mime_in_reply_text(text));
		free(text);
	}
	return 0;
}
