// service/static/lib/npy.mjs: .npy files made by numpy (base64 below, with the Python that
// made each) read back to the exact numbers.
import assert from "node:assert/strict";
import { test } from "node:test";

import { base64Bytes, halfTo32, parseNpy, parseNpyBase64 } from "../../../../service/static/lib/npy.mjs";

// np.save(buf, np.array([0.0, -0.0, 1.0, -2.0, 0.333, 65504.0, 6.103515625e-05, 5.960464477539063e-08,
//                        np.inf, -np.inf, np.nan, 1e-3], dtype=np.float16).reshape(2, 3, 2))
const HALF = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGYyJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDMsIDIpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAACAADwAwFQ1/3sABAEAAHwA/AB+GRQ=";
// [float(v) for v in that array.ravel()]: the float16 values, exactly
const HALF_VALUES = [0, -0, 1, -2, 0.3330078125, 65504, 6.103515625e-05, 5.960464477539063e-08, Infinity, -Infinity, NaN,
  0.0010004043579101562];
// np.save(buf, np.array([[1.5, -2.25], [3.0e-8, 1e30]], dtype=np.float32))
const F32 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDIpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAMA/AAAQwFnZADPK8klx";
// numpy.lib.format.write_array(buf, np.arange(6, dtype=np.float32).reshape(1, 2, 3), version=(2, 0))
const V2 = "k05VTVBZAgB0AAAAeydkZXNjcic6ICc8ZjQnLCAnZm9ydHJhbl9vcmRlcic6IEZhbHNlLCAnc2hhcGUnOiAoMSwgMiwgMyksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAAAACAPwAAAEAAAEBAAACAQAAAoEA=";
// np.save(buf, np.zeros(2))  (float64)
const F8 = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY4JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAAAAAAAAAAAAAAAAAA";
// np.save(buf, np.asfortranarray(np.arange(4, dtype=np.float32).reshape(2, 2)))
const FORTRAN = "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBUcnVlLCAnc2hhcGUnOiAoMiwgMiksIH0gICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAAAAAAQAAAgD8AAEBA";

test("float16 .npy: shape, and every value exact (signed zero, subnormals, the largest, infinities, NaN)", () => {
  const { dtype, shape, data } = parseNpyBase64(HALF);
  assert.equal(dtype, "<f2");
  assert.deepEqual(shape, [2, 3, 2]);
  assert.ok(data instanceof Float32Array);
  assert.equal(data.length, HALF_VALUES.length);
  HALF_VALUES.forEach((expected, i) => assert.ok(Object.is(data[i], expected), `value ${i}: ${data[i]} is not ${expected}`));
});

test("every float16 bit pattern decodes as float32 bit arithmetic says", () => {
  // Independent of the reader's formula: a normal half's bits, rebiased into a float32's.
  const table = halfTo32(), bits = new Uint32Array(1), asFloat = new Float32Array(bits.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = h >> 15, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
    let expected;
    if (exp === 0) expected = (sign ? -1 : 1) * frac * 2 ** -24;  // subnormal (and zero): frac units of 2^-24
    else if (exp === 31) expected = frac ? NaN : (sign ? -Infinity : Infinity);
    else { bits[0] = (sign << 31) | ((exp - 15 + 127) << 23) | (frac << 13); expected = asFloat[0]; }
    assert.ok(Object.is(table[h], expected), `half 0x${h.toString(16)}: ${table[h]} is not ${expected}`);
  }
});

test("float32 .npy, read from bytes as from base64", () => {
  const values = [1.5, -2.25, 2.999999892949745e-08, 1.0000000150474662e+30];  // numpy's float32 values as doubles
  for (const parsed of [parseNpyBase64(F32), parseNpy(base64Bytes(F32)), parseNpy(base64Bytes(F32).buffer)]) {
    assert.equal(parsed.dtype, "<f4");
    assert.deepEqual(parsed.shape, [2, 2]);
    assert.deepEqual(Array.from(parsed.data), values);
  }
});

test("format version 2 (a 4-byte header length)", () => {
  const { shape, data } = parseNpyBase64(V2);
  assert.deepEqual(shape, [1, 2, 3]);
  assert.deepEqual(Array.from(data), [0, 1, 2, 3, 4, 5]);
});

test("bytes at an offset in a larger buffer", () => {
  const bytes = base64Bytes(F32), padded = new Uint8Array(bytes.length + 3);
  padded.set(bytes, 3);
  assert.deepEqual(Array.from(parseNpy(padded.subarray(3)).data), [1.5, -2.25, 2.999999892949745e-08, 1.0000000150474662e+30]);
});

test("refusals say what is wrong and what is taken", () => {
  assert.throws(() => parseNpyBase64(F8), { message: "unsupported .npy dtype <f8; this reader takes <f2, <f4" });
  assert.throws(() => parseNpyBase64(FORTRAN), { message: "unsupported .npy layout: Fortran order" });
  assert.throws(() => parseNpy(new TextEncoder().encode("PK\x03\x04 a zip, not a .npy")), /not a \.npy file/);
  const cut = base64Bytes(HALF).subarray(0, base64Bytes(HALF).length - 2);
  assert.throws(() => parseNpy(cut), { message: ".npy body holds 22 bytes; shape (2, 3, 2) of <f2 needs 24" });
});
