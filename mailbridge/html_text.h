/* html_text: the plain-text form of an HTML body, through libxml2's HTML
 * parser (every HTML 4 entity, broken markup recovered as browsers do).
 * Blocks become lines (paragraphs and headings a blank line after),
 * <br> a line break, list items "- " or "1. ", links "text <url>" when
 * the URL says more than the text, quotes "> ", tables a cell per
 * column separated by two spaces; <head>, <script> and <style> are
 * dropped. wrap > 0 breaks lines at spaces to fit that many columns
 * (the text part of outbound mail); 0 keeps paragraphs as single lines
 * (a HighLevel message). Never NULL; ends with one newline. */
#ifndef MB_HTML_TEXT_H
#define MB_HTML_TEXT_H

#include <stddef.h>

char *html_text(const char *html, size_t wrap);

/* libxml2's global state, made once before threads use it (its docs ask
 * for that in the main thread), and freed at exit. */
void html_text_init(void);
void html_text_deinit(void);

#endif
