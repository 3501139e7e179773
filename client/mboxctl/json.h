/*
 * json.h - mboxctl's JSON output: strings, base64, messages. Output only:
 * mboxctl never parses JSON (yet).
 */
#ifndef MBOXCTL_JSON_H
#define MBOXCTL_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mbox.h"

/*
 * json_string - write s[0..n) as a JSON string literal, quotes included:
 * '"' and '\' escaped, control characters (and DEL) as \u00XX, all other
 * bytes as they are (the caller passes UTF-8).
 */
void json_string(FILE *f, const char *s, size_t n);
/* json_string of a NUL-terminated string. */
void json_cstring(FILE *f, const char *s);
/* p[0..n) in standard base64 with padding, quoted. */
void json_base64(FILE *f, const uint8_t *p, size_t n);

/*
 * json_msg - one message as one compact JSON object and a newline:
 * {"id":..,"mailbox":"..","priority":..,"deliveries":..,
 *  ["dead_reason":"..",]"sender":{"pid":..,"uid":..,"gid":..,"comm":".."},
 *  "time":<ns>,["expires_ns":<ns>,]["deadline_ns":<ns>,]
 *  "headers":{"k":"v",..},"data":".." | "data_base64":".."}
 * "time" is the enqueue time; expires_ns only when the message has a ttl,
 * deadline_ns only for leased (received or pushed) messages, both ns
 * since the epoch. "data" when the payload is UTF-8 without NUL, else
 * "data_base64".
 */
void json_msg(FILE *f, const mbox_msg *msg);

/*
 * The parts of a message object that json_msg and the export format
 * share, each written with its leading comma: json_msg_origin writes
 * [,"dead_reason":".."],"sender":{..}; json_msg_content writes
 * ,"headers":{..},"data":".." (or "data_base64").
 */
void json_msg_origin(FILE *f, const mbox_msg *msg);
void json_msg_content(FILE *f, const mbox_msg *msg);

#endif
