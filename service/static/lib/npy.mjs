// A .npy file (format versions 1-3, little-endian float16/float32, C order) as a Float32Array:
// the feature maps the predict route sends with `encoding=npy&dtype=float16|float32`.
// Pure: bytes in, numbers out.

/** The dtypes this reader takes: numpy's `descr` -> bytes per value. */
export const DTYPES = { "<f2": 2, "<f4": 4 };

let halfTable = null;

/** Every float16 bit pattern's value, exact (all of them fit a float32), made once. */
export function halfTo32() {
  if (halfTable) return halfTable;
  halfTable = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    halfTable[h] = exp === 0 ? sign * 2 ** -14 * (frac / 1024)
      : exp === 31 ? (frac ? NaN : sign * Infinity) : sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }
  return halfTable;
}

/** Base64 text (as in the JSON answers) -> its bytes. */
export function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** A header field, e.g. 'descr' or 'shape', from numpy's Python-literal header. */
function field(header, name, pattern) {
  const found = new RegExp(`'${name}':\\s*${pattern}`).exec(header);
  if (!found) throw new Error(`not a .npy header: no '${name}' in ${header.trim()}`);
  return found[1];
}

/** .npy bytes -> {dtype, shape, data}, data a Float32Array in C order. */
export function parseNpy(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  if (bytes.length < 10 || bytes[0] !== 0x93 || String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY") {
    throw new Error("not a .npy file (no \\x93NUMPY magic)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const long = bytes[6] >= 2;  // versions 2 and 3 give the header's length in 4 bytes, 1 in 2
  const headerStart = long ? 12 : 10;
  const headerLength = long ? view.getUint32(8, true) : view.getUint16(8, true);
  const start = headerStart + headerLength;
  const header = new TextDecoder().decode(bytes.subarray(headerStart, start));
  const dtype = field(header, "descr", "'([^']+)'");
  if (!(dtype in DTYPES)) throw new Error(`unsupported .npy dtype ${dtype}; this reader takes ${Object.keys(DTYPES).join(", ")}`);
  if (field(header, "fortran_order", "(True|False)") === "True") throw new Error("unsupported .npy layout: Fortran order");
  const shape = field(header, "shape", "\\(([^)]*)\\)").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const size = DTYPES[dtype];
  if (bytes.length - start !== count * size) {
    throw new Error(`.npy body holds ${bytes.length - start} bytes; shape (${shape.join(", ")}) of ${dtype} needs ${count * size}`);
  }
  const body = bytes.slice(start).buffer;  // a copy: aligned for the typed arrays
  let data;
  if (dtype === "<f4") data = new Float32Array(body);
  else {
    const half = new Uint16Array(body), table = halfTo32();
    data = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) data[i] = table[half[i]];
  }
  return { dtype, shape, data };
}

/** The same from base64 text. */
export const parseNpyBase64 = (text) => parseNpy(base64Bytes(text));
