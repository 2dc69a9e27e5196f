# Warnings for sluice's own targets; -Werror when SLUICE_WERROR is on (CI).
function(sluice_warnings target)
    target_compile_options(${target} PRIVATE
        -Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes -Wmissing-prototypes
        -Wformat=2 -Wno-unused-parameter -Wvla -Wimplicit-fallthrough)
    if(SLUICE_WERROR)
        target_compile_options(${target} PRIVATE -Werror)
    endif()
endfunction()
