/*
 * reserve.h - disk space kept aside so that a full disk can be drained.
 *
 * Receiving and acking a message writes too: a lease row, the deletes,
 * their WAL frames, the checkpoint that copies them into the database.
 * On a disk that posts (or anything else) filled to the last block, those
 * writes fail like the posts, and a full queue could never be emptied. A
 * ReserveFile holds some space in a file of its own (fallocate) while the
 * disk has room; the broker gives it back to the file system when a write
 * finds the disk full, so that the writes which drain have room, and
 * takes it again once the disk has room for it twice over.
 */
#ifndef MBOX_STORE_RESERVE_H
#define MBOX_STORE_RESERVE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ReserveFile ReserveFile;

/*
 * reserve_file_new - the reserve of size bytes at path (not yet taken: see
 * reserve_file_take). A size of 0 is a reserve that is never taken.
 * Returns 0, -ENOMEM or -ENAMETOOLONG.
 */
int reserve_file_new(ReserveFile **out, const char *path, uint64_t size);
/* Close it; the file and the space it holds stay (the next start takes
 * them over). */
void reserve_file_free(ReserveFile *rf);

/*
 * reserve_file_take - hold the space: the file is created (mode 0600) or
 * opened and allocated to its size. It is created only when taken. Refused with
 * -ENOSPC, touching nothing, unless the file system has the room for it and as
 * much again (what it holds already counted as free), so that taking it never
 * fills the disk itself. 0 when held (already or now); otherwise a negative
 * errno, the reason in reserve_file_errmsg.
 */
int reserve_file_take(ReserveFile *rf);
/* Give the space back to the file system: the file is cut to nothing.
 * Returns 0 or a negative errno. */
int reserve_file_release(ReserveFile *rf);
/* Give back all but keep bytes (the file is cut to keep; nothing happens
 * if it holds no more): the reserve is no longer held, and the rest can
 * be given back later. Returns 0 or a negative errno. */
int reserve_file_release_part(ReserveFile *rf, uint64_t keep);
/* The bytes the file holds: the size while held; what a partial release
 * kept (or a file found short by reserve_file_take) otherwise. */
uint64_t reserve_file_kept(const ReserveFile *rf);
bool reserve_file_held(const ReserveFile *rf);
/* The last reserve_file_take found the file holding less than the
 * reserve's size: it was released, by this process or an earlier one,
 * and not taken again since (the file is created only when taken). */
bool reserve_file_was_short(const ReserveFile *rf);
uint64_t reserve_file_size(const ReserveFile *rf);
const char *reserve_file_path(const ReserveFile *rf);
const char *reserve_file_errmsg(const ReserveFile *rf);

/*
 * reserve_file_disk_free - the bytes the file system holding the reserve
 * still has for this process (root may use the blocks kept for it), into
 * *out. Returns 0 or a negative errno.
 */
int reserve_file_disk_free(const ReserveFile *rf, uint64_t *out);

#endif
