'use strict';
// Shared by the dashboard's pages: the API token, fetch with the token, DOM and number helpers.
// [Dashboard token] The token lives in sessionStorage (this tab only, gone when it closes) and is sent
// as `Authorization: Bearer` on every request; it never goes into a URL, so no log or Referer sees it.
const RX = (() => {
  const KEY = 'rx_token';
  const TERMINAL = ['succeeded', 'failed', 'cancelled'];

  function token() { return sessionStorage.getItem(KEY) || ''; }
  function setToken(t) {
    if (t) sessionStorage.setItem(KEY, t);
    else sessionStorage.removeItem(KEY);
  }

  // Resolves to the parsed JSON (or text) of a 2xx; rejects with an Error carrying the server's
  // {"error":{code,message,field}} otherwise.
  async function api(path, opts = {}) {
    const headers = {};
    const t = token();
    if (t) headers['Authorization'] = 'Bearer ' + t;
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {method: opts.method || 'GET', headers, body: opts.body,
                                   cache: 'no-store', credentials: 'omit', redirect: 'error'});
    const text = await res.text();
    let body = text;
    if ((res.headers.get('Content-Type') || '').startsWith('application/json')) {
      try { body = JSON.parse(text); } catch (e) { /* keep the text */ }
    }
    if (!res.ok) {
      const e = body && body.error ? body.error : {code: String(res.status), message: String(text).slice(0, 300)};
      const err = new Error(`HTTP ${res.status} ${e.code}: ${e.message}` + (e.field ? ` (field ${e.field})` : ''));
      err.status = res.status;
      throw err;
    }
    return body;
  }

  // A 2xx body as a Blob (a download), fetched with the token header like api(); same errors.
  async function apiBlob(path) {
    const t = token();
    const res = await fetch(path, {headers: t ? {'Authorization': 'Bearer ' + t} : {}, cache: 'no-store',
                                   credentials: 'omit', redirect: 'error'});
    if (!res.ok) {
      let e = {code: String(res.status), message: ''};
      try { e = (await res.json()).error || e; } catch (x) { /* not JSON */ }
      const err = new Error(`HTTP ${res.status} ${e.code}: ${e.message}`);
      err.status = res.status;
      throw err;
    }
    return res.blob();
  }

  // Builds an element; children are nodes or strings (always text, never parsed as HTML).
  function el(tag, attrs, ...children) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') n.className = v;
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      n.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return n;
  }

  function num(v, digits = 4) {
    return typeof v === 'number' && isFinite(v) ? Number(v.toPrecision(digits)).toString() : '-';
  }
  function pct(v) { return typeof v === 'number' ? (100 * v).toFixed(2) + '%' : '-'; }
  function duration(s) {
    if (typeof s !== 'number' || !isFinite(s) || s < 0) return '-';
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
  }
  function mib(bytes) { return typeof bytes === 'number' ? bytes / (1024 * 1024) : null; }

  // Fraction of the job's steps done, from its progress, or null before the first report.
  function fraction(job) {
    const p = job.progress || {};
    if (job.state === 'succeeded') return 1;
    if (!p.epochs || !p.steps_per_epoch || p.epoch == null) return null;
    const done = (p.epoch - 1) * p.steps_per_epoch + (p.step || 0);
    return Math.min(1, Math.max(0, done / (p.epochs * p.steps_per_epoch)));
  }
  // Seconds left at the average pace since the job started (null when unknown or not running).
  function eta(job) {
    const f = fraction(job);
    if (job.state !== 'running' || !f || !job.started_at) return null;
    const elapsed = (Date.now() - Date.parse(job.started_at)) / 1000;
    return elapsed * (1 - f) / f;
  }
  function totalImagesPerSec(ranks) {
    let sum = 0, any = false;
    for (const r of ranks || []) if (typeof r.images_per_sec === 'number') { sum += r.images_per_sec; any = true; }
    return any ? sum : null;
  }
  function isTerminal(state) { return TERMINAL.includes(state); }

  // The token box in each page's header.
  function initTokenBox() {
    const input = document.getElementById('token');
    const state = document.getElementById('token-state');
    const show = () => { state.textContent = token() ? 'token set (this tab)' : 'no token'; };
    document.getElementById('token-save').addEventListener('click', () => {
      setToken(input.value.trim());
      input.value = '';
      show();
    });
    document.getElementById('token-clear').addEventListener('click', () => { setToken(''); show(); });
    show();
  }

  // Calls fn every `ms` after the previous call settled (never overlapping), skipping hidden tabs.
  function poll(fn, ms) {
    let timer = null, stopped = false;
    const tick = async () => {
      if (stopped) return;
      if (!document.hidden) {
        try { if ((await fn()) === false) { stopped = true; return; } } catch (e) { console.warn(e); }
      }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  return {api, apiBlob, el, num, pct, duration, mib, fraction, eta, totalImagesPerSec, isTerminal, initTokenBox, poll, token};
})();
