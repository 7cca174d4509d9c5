# Debian sid's binaries as store paths: the patched systemd 262 (built from
# Debian's source with patches/systemd/262, as the e2e boots it), the sid
# libraries it needs, bash and coreutils, from runtime/runtime.tar
# (hack/systemd-runtime). Each package gets what nixpkgs' autoPatchelfHook
# would give it: every dynamic ELF file's interpreter and RUNPATH point into
# the store (patchelf, run here; it is a build input only), so nothing in
# the image looks in /lib or /usr. systemd also gets the layout of nixpkgs'
# systemd package: units under example/systemd/system (NixOS links the ones it
# wants into /etc/systemd/system), their /usr paths rewritten to its own.
{
  mkDrv,
  runtimeTar,
  versions,
}:
let
  # The tarball, unpacked: libs/, systemd/, bash/, coreutils/ (one directory
  # per package, with DIR.elf listing its dynamic ELF files), tools/ (patchelf
  # and the libraries it runs with). A build input only: nothing refers to it.
  unpacked = mkDrv "debian-sid-runtime-unpacked" ''
    mkdir -p "$out"
    tar -xf ${runtimeTar} -C "$out"
  '' { };

  # patchDir DIR INTERP RPATH: copy DIR of the tarball to $out and point the
  # interpreter ("exe" lines) and RUNPATH ("exe" and "lib" lines) of its ELF
  # files into the store.
  patchDir = dir: interp: rpath: ''
    cp -a ${unpacked}/${dir} "$out"
    chmod -R u+w "$out"
    pe() { ${unpacked}/tools/lib/ld-linux-x86-64.so.2 --library-path ${unpacked}/tools/lib ${unpacked}/tools/patchelf "$@"; }
    n=0
    while read -r kind file; do
      case $kind in
        exe) pe --set-interpreter "${interp}" --set-rpath "${rpath}" "$out/$file" ;;
        lib) pe --set-rpath "${rpath}" "$out/$file" ;;
        *) echo "${dir}.elf: unknown kind '$kind'" >&2; exit 1 ;;
      esac
      n=$((n + 1))
    done < ${unpacked}/${dir}.elf
    echo "${dir}: patched $n ELF files" >&2
  '';

  # glibc and every library systemd, bash and coreutils load (their DT_NEEDED
  # closure), in one lib/ directory.
  libs = mkDrv "debian-sid-libs-${versions.glibc}" (
    patchDir "libs" "$out/lib/ld-linux-x86-64.so.2" "$out/lib"
  ) { };

  interp = "${libs}/lib/ld-linux-x86-64.so.2";

  systemd =
    mkDrv "systemd-${versions.systemd}" (
      patchDir "systemd" interp "$out/lib/systemd:${libs}/lib"
      + ''
        # Units and tmpfiles.d name their programs by Debian's /usr paths, or
        # by bare names systemd looks up in its compiled-in search path
        # (/usr/bin …): point both at this package (nixpkgs' systemd has its own
        # store path compiled in).
        {
          echo "s#/usr/lib/systemd/#$out/lib/systemd/#g"
          echo "s#/usr/bin/#$out/bin/#g"
          for p in "$out"/bin/*; do
            n=''${p##*/}
            echo "s#^\(Exec[A-Za-z]*=[-@:+!|]*\)$n\$#\1$out/bin/$n#"
            echo "s#^\(Exec[A-Za-z]*=[-@:+!|]*\)$n #\1$out/bin/$n #"
          done
        } > units.sed
        for f in $(find "$out/example" -type f); do
          sed -i -f units.sed "$f"
        done
      ''
    ) { };

  bash = mkDrv "bash-${versions.bash}" (patchDir "bash" interp "${libs}/lib") { };
  coreutils = mkDrv "coreutils-${versions.coreutils}" (patchDir "coreutils" interp "${libs}/lib") { };
in
{
  inherit
    unpacked
    libs
    systemd
    bash
    coreutils
    ;
}
