# Warnings for the project's own targets (third-party headers come in as SYSTEM).
function(edifice_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wnon-virtual-dtor
    -Wno-restrict -Wno-stringop-overflow
    # Options structs are filled with designated initialisers that leave defaults in place.
    -Wno-missing-field-initializers)
endfunction()
