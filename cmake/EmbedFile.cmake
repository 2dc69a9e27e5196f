# Writes OUTPUT, a C file that defines `const unsigned char NAME[]` holding
# the bytes of INPUT (plus a NUL) and `const size_t NAME_len`, so a file
# such as the status page is built into the binary without xxd.
# Usage: cmake -DINPUT=... -DOUTPUT=... -DNAME=... -DHEADER=... -P EmbedFile.cmake
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUTPUT}.tmp"
    "/* Generated from ${NAME_SOURCE} by cmake/EmbedFile.cmake: do not edit. */\n"
    "#include \"${HEADER}\"\n\n"
    "const unsigned char ${NAME}[] = {\n${bytes}0x00};\n"
    "const size_t ${NAME}_len = ${size};\n")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
