// The login page: send the token once, get a session cookie, go to the page.
const form = document.getElementById("login");
const input = document.getElementById("token");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const token = input.value;
  input.value = "";
  let response;
  try {
    response = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
      credentials: "same-origin",
    });
  } catch (failure) {
    show(`The API did not answer: ${failure.message}`);
    return;
  }
  if (response.ok) {
    window.location.replace("/");
    return;
  }
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error || message;
  } catch {
    // not JSON: keep the status line
  }
  show(message);
});

function show(message) {
  error.textContent = message;
  error.hidden = false;
  input.focus();
}
