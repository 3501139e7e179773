/*
 * schema.h - the store's SQL schema and its forward migrations.
 *
 * The schema version lives in PRAGMA user_version, the file's owner in
 * PRAGMA application_id. Version 0 is an empty database; each release
 * that changes the schema adds one migration step in schema.c, so a
 * database of any older version is brought up to SCHEMA_VERSION in one
 * transaction. A database newer than SCHEMA_VERSION, or one that belongs
 * to another program, is refused and left untouched.
 */
#ifndef MBOX_STORE_SCHEMA_H
#define MBOX_STORE_SCHEMA_H

#include <stddef.h>

#include <sqlite3.h>

/* The schema version this build writes and understands. */
#define SCHEMA_VERSION 4

/* PRAGMA application_id of an mboxd database: "mbox" in ASCII. */
#define SCHEMA_APPLICATION_ID 0x6d626f78

/*
 * schema_check - read the schema version of db and decide whether this
 * build can use it. Touches nothing. Returns 0 and the version in
 * *version (0 for an empty database), or a negative errno with a reason
 * in errbuf: -ENOTSUP for a newer schema, -EINVAL for a file that is not
 * an SQLite database or belongs to another program, -EIO (-ENOSPC,
 * -ENOMEM) when SQLite fails.
 */
int schema_check(sqlite3 *db, int *version, char *errbuf, size_t errlen);

/*
 * schema_migrate - bring db up to SCHEMA_VERSION in one BEGIN IMMEDIATE
 * transaction (checking it again inside, with schema_check). No
 * transaction may be open. Returns 0 and the version found before in
 * *from (if from is not NULL), or a negative errno with a reason in
 * errbuf; on failure the database is unchanged.
 */
int schema_migrate(sqlite3 *db, int *from, char *errbuf, size_t errlen);

#endif
