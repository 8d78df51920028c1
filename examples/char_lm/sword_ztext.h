// A reader for SWORD "zText" Bible modules (e.g. Debian's sword-text-kjv), enough to turn one
// into plain text for language modelling.
//
// A zText module is, per testament (ot, nt), three files:
//   NAME.bzs  block index, 12 bytes a record: u32 offset in .bzz, u32 compressed size,
//             u32 uncompressed size (little-endian)
//   NAME.bzv  verse index, 10 bytes a record: u32 block number, u32 offset in the uncompressed
//             block, u16 length; one record per verse slot (book/chapter headings included;
//             empty slots have length 0)
//   NAME.bzz  the zlib-compressed blocks, back to back
// Verse text is OSIS XML. to_plain() strips the markup: element tags go, the contents of notes
// and titles go with them (footnotes, headings), entities are decoded and runs of whitespace
// become one space.
#pragma once
#include <string>
#include <vector>

namespace sword {

// The raw (OSIS) text of every non-empty verse slot of one testament, in order. Throws
// std::runtime_error naming the file on a missing, truncated or corrupt file.
std::vector<std::string> read_testament(const std::string& dir, const std::string& testament);

// OSIS markup to plain text (see above).
std::string to_plain(const std::string& osis);

// Every verse of the module in `dir` (ot then nt; a missing testament is skipped) as plain
// text, leaving out slots with no text after stripping (headings, empty slots). Throws when
// neither testament exists.
std::vector<std::string> read_verses(const std::string& dir);

}  // namespace sword
