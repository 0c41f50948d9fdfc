#!/usr/bin/env node
// Verifies leadstream's RSA delivery signatures the way Adobe's verifier library
// (@adobe/aio-lib-events, signatureUtils.js) does: crypto.createPublicKey(spki PEM), then
// crypto.verify('rsa-sha256', <raw body bytes>, key, Buffer.from(signature, 'base64')).
// Stricter than that library, which accepts either signature: here BOTH must verify.
//
// Usage: node verify.js CASE.json [BASE_URL]
//   CASE.json: {"body_base64": "...", "headers": {...}, "pems": {"/keys/pub-key-….pem": "-----BEGIN…"}}
//   A key path missing from "pems" is fetched from BASE_URL + path (e.g. http://127.0.0.1:8470).
// Exit 0 when both signatures verify, 1 when one does not, 2 on a usage or fetch error.
'use strict'

const crypto = require('crypto')
const fs = require('fs')

async function publicKeyPem (path, pems, baseUrl) {
  if (pems && pems[path]) return pems[path]
  if (!baseUrl) throw new Error(`no PEM for ${path} and no BASE_URL to fetch it from`)
  const response = await fetch(baseUrl.replace(/\/$/, '') + path)
  if (!response.ok) throw new Error(`GET ${path}: HTTP ${response.status}`)
  return await response.text()
}

async function main () {
  const [casePath, baseUrl] = process.argv.slice(2)
  if (!casePath) {
    console.error('usage: node verify.js CASE.json [BASE_URL]')
    return 2
  }
  const testCase = JSON.parse(fs.readFileSync(casePath, 'utf8'))
  const body = Buffer.from(testCase.body_base64, 'base64')
  const headers = Object.fromEntries(Object.entries(testCase.headers).map(([k, v]) => [k.toLowerCase(), v]))
  let allValid = true
  for (const n of [1, 2]) {
    const signature = headers[`x-adobe-digital-signature-${n}`]
    const path = headers[`x-adobe-public-key${n}-path`]
    if (!signature || !path) {
      console.log(`signature ${n}: missing header`)
      allValid = false
      continue
    }
    const pem = await publicKeyPem(path, testCase.pems, baseUrl)
    const key = crypto.createPublicKey({ key: pem, format: 'pem', type: 'spki' })
    const valid = crypto.verify('rsa-sha256', body, key, Buffer.from(signature, 'base64'))
    console.log(`signature ${n}: ${valid ? 'valid' : 'INVALID'} (${path})`)
    allValid = allValid && valid
  }
  return allValid ? 0 : 1
}

main().then(
  (code) => { process.exitCode = code },
  (error) => { console.error(error.message); process.exitCode = 2 }
)
